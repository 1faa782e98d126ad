"""The smaller collectors against virsh on real guests that have each feature set: iothreads and halt
polling (`virsh domstats`), vCPU and emulator pinning (`virsh vcpupin` / `emulatorpin`), I/O limits
(`virsh blkdeviotune`), autostart and persistent (`virsh dominfo`), labels from metadata and the title
(`virsh metadata`, `virsh desc --title`, changed while the exporter runs), and the per-vCPU switch.

References come from virsh's own output, parsed here; the exporter's values are never the expectation.
"""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET
from typing import Callable, Dict, List, Optional

import pytest

import testbed as tb
from bounds import wait_for
from exporterproc import ExporterProcess
from scrape import Samples

TEST_BOUND_S = 120
pytestmark = [pytest.mark.libvirt, pytest.mark.timeout(TEST_BOUND_S, func_only=True)]

NS = "http://example.org/virt-exporter-test/app/1"
LABEL_FLAGS = ["--collector.domain.metadata-label", "team=%s:/app/@team" % NS,
               "--collector.domain.metadata-label", "role=%s:/app/role" % NS]
# How long a change made with virsh may take to reach a scrape (an event, then the next scrape).
CHANGE_WAIT_S = 10.0
NS_PER_S = 1e9


@pytest.fixture(scope="module")
def guests(libvirtd):
    """"pinned": persistent, 2 vCPUs, an iothread; "transient": created, never defined."""
    bed = tb.Testbed()
    try:
        pinned = bed.make_guest("idle", vcpus=2)
        transient = bed.make_guest("idle", persistent=False, interface=False)
        yield {"pinned": pinned, "transient": transient, "prefix": bed.prefix}
    finally:
        bed.cleanup()


def _exporter(guests, *extra: str) -> ExporterProcess:
    return ExporterProcess(["--libvirt.min-interval", "0", "--libvirt.timeout", "20",
                            "--libvirt.domain-include", "^" + re.escape(guests["prefix"]), *extra])


@pytest.fixture(scope="module")
def exporter(guests):
    with _exporter(guests, "--collector.iothread", *LABEL_FLAGS) as exp:
        yield exp


def scrape_until(exp: ExporterProcess, what: str, ok: Callable[[Samples], bool],
                 timeout_s: float = CHANGE_WAIT_S) -> Samples:
    last: List[Samples] = []

    def scraped() -> Optional[Samples]:
        last[:] = [exp.scrape()]
        return last[0] if ok(last[0]) else None

    return wait_for(scraped, timeout_s, what, 0.3, detail=lambda: "last scrape for it: %s" % [
        (n, dict(lab), v) for (n, lab), v in last[0].values.items() if n.startswith("libvirt_domain")][:60])


def only(samples: Samples, name: str, **labels: str) -> Dict[str, str]:
    found = samples.series(name, **labels)
    assert len(found) == 1, "want one %s%s, got %s" % (name, labels, found)
    return found[0][0]


# --- halt polling and iothreads: virsh domstats ----------------------------------------------------


def test_iothread_and_haltpoll_equal_virsh_domstats(exporter, guests):
    g = guests["pinned"]
    # Distinct values, so that a field mixed up with another shows.
    tb.virsh("iothreadset", g.name, "1", "--poll-max-ns", "65536", "--poll-grow", "2", "--poll-shrink", "4", "--live")
    before = g.domstats("iothread", "cpu")
    samples = exporter.scrape()
    after = g.domstats("iothread", "cpu")
    assert before.get("iothread.count") == 1, "the guest should have one iothread: %s" % before
    assert samples.get("libvirt_domain_iothreads", domain=g.name) == after["iothread.count"]
    ids = sorted({k.split(".")[1] for k in after if re.match(r"^iothread\.\d+\.", k)})
    assert ids and after["iothread.1.poll-grow"] == 2 and after["iothread.1.poll-shrink"] == 4, after
    for ident in ids:
        for key, name, scale in (("poll-max-ns", "libvirt_domain_iothread_poll_max_seconds", NS_PER_S),
                                 ("poll-grow", "libvirt_domain_iothread_poll_grow", 1),
                                 ("poll-shrink", "libvirt_domain_iothread_poll_shrink", 1)):
            want = after["iothread.%s.%s" % (ident, key)] / scale
            assert samples.get(name, domain=g.name, iothread=ident) == pytest.approx(want), (name, ident)
    # This host's KVM reports both halt-polling keys (0 so far: its guests do not halt-poll).
    for key, name in (("cpu.haltpoll.success.time", "libvirt_domain_cpu_haltpoll_success_seconds_total"),
                      ("cpu.haltpoll.fail.time", "libvirt_domain_cpu_haltpoll_fail_seconds_total")):
        assert key in after, "virsh domstats has no %s here" % key
        got = samples.get(name, domain=g.name)
        assert got is not None, name
        assert before[key] / NS_PER_S <= got <= after[key] / NS_PER_S, (name, before[key], got, after[key])


# --- pinning: virsh vcpupin / emulatorpin ----------------------------------------------------------


def virsh_vcpupin(name: str) -> Dict[str, str]:
    """vCPU → CPU affinity list as `virsh vcpupin` prints it (" 0   0-1")."""
    out = {}
    for line in tb.virsh("vcpupin", name).splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0].isdigit():
            out[parts[0]] = parts[1]
    assert out, "no vcpupin output for %s" % name
    return out


def virsh_emulatorpin(name: str) -> str:
    lines = [line.split()[-1] for line in tb.virsh("emulatorpin", name).splitlines() if line.strip()]
    assert lines, "no emulatorpin output"
    return lines[-1]


def pins_of(samples: Samples, name: str) -> Dict[str, str]:
    return {lab["vcpu"]: lab["cpus"] for lab, _v in samples.series("libvirt_domain_vcpu_pin_info", domain=name)}


def test_pinning_equals_virsh_vcpupin_and_emulatorpin_also_after_a_live_change(exporter, guests):
    """Series only for what is pinned; virsh shows every host CPU for the rest."""
    g = guests["pinned"]
    host_cpus = os.cpu_count() or 1
    every_cpu = "0-%d" % (host_cpus - 1) if host_cpus > 1 else "0"
    samples = exporter.scrape()
    assert pins_of(samples, g.name) == {}
    assert not samples.series("libvirt_domain_emulator_pin_info", domain=g.name)
    assert set(virsh_vcpupin(g.name).values()) == {every_cpu} and virsh_emulatorpin(g.name) == every_cpu

    last = str(host_cpus - 1)
    tb.virsh("vcpupin", g.name, "1", last, "--live")
    tb.virsh("emulatorpin", g.name, "0", "--live")
    virsh_pins = virsh_vcpupin(g.name)
    want_emulator = virsh_emulatorpin(g.name)
    assert virsh_pins == {"0": every_cpu, "1": last} and want_emulator == "0", (virsh_pins, want_emulator)
    want_vcpu = {vcpu: cpus for vcpu, cpus in virsh_pins.items() if cpus != every_cpu or vcpu == "1"}
    samples = scrape_until(exporter, "pinning as virsh shows it after vcpupin/emulatorpin --live",
                           lambda s: pins_of(s, g.name) == want_vcpu and s.series(
                               "libvirt_domain_emulator_pin_info", domain=g.name, cpus=want_emulator))
    assert len(samples.series("libvirt_domain_emulator_pin_info", domain=g.name)) == 1


# --- I/O limits: virsh blkdeviotune ----------------------------------------------------------------


def virsh_blkdeviotune(name: str, target: str) -> Dict[str, int]:
    out = {}
    for line in tb.virsh("blkdeviotune", name, target).splitlines():
        key, sep, value = line.partition(":")
        if sep and value.strip().isdigit():
            out[key.strip()] = int(value.strip())
    return out


IOTUNE_NAMES = {"_bytes_sec": "libvirt_domain_block_iotune_bytes_per_second",
                "_iops_sec": "libvirt_domain_block_iotune_requests_per_second",
                "_bytes_sec_max": "libvirt_domain_block_iotune_burst_bytes_per_second",
                "_iops_sec_max": "libvirt_domain_block_iotune_burst_requests_per_second"}


def iotune_series(samples: Samples, name: str) -> Dict[str, float]:
    """virsh's field name (read_bytes_sec …) → the exporter's value, for every iotune series."""
    out = {}
    for suffix, metric in IOTUNE_NAMES.items():
        for lab, v in samples.series(metric, domain=name, target="vda"):
            out[lab["op"] + suffix] = v
    return out


def test_iotune_equals_virsh_blkdeviotune(exporter, guests):
    g = guests["pinned"]
    assert iotune_series(exporter.scrape(), g.name) == {}, "no limits set yet: no series"
    tb.virsh("blkdeviotune", g.name, "vda", "--live", "--read-bytes-sec", "1048576",
             "--write-bytes-sec", "2097152", "--write-bytes-sec-max", "4194304", "--total-iops-sec", "300",
             "--total-iops-sec-max", "600")
    want = {k: v for k, v in virsh_blkdeviotune(g.name, "vda").items() if v and not k.endswith("_length")
            and k != "size_iops_sec"}
    assert len(want) == 5, want
    scrape_until(exporter, "iotune series equal to virsh blkdeviotune %s" % want,
                 lambda s: iotune_series(s, g.name) == want)


# --- autostart and persistent: virsh dominfo -------------------------------------------------------


def virsh_dominfo(name: str) -> Dict[str, str]:
    return {k.strip(): v.strip() for k, _s, v in
            (line.partition(":") for line in tb.virsh("dominfo", name).splitlines()) if _s}


def check_flags(samples: Samples, name: str) -> None:
    info = virsh_dominfo(name)
    assert samples.get("libvirt_domain_persistent", domain=name) == (1 if info["Persistent"] == "yes" else 0), info
    assert samples.get("libvirt_domain_autostart", domain=name) == (1 if info["Autostart"] == "enable" else 0), info


def test_autostart_and_persistent_equal_virsh_dominfo(exporter, guests):
    g, t = guests["pinned"], guests["transient"]
    samples = exporter.scrape()
    check_flags(samples, g.name)
    check_flags(samples, t.name)
    assert samples.get("libvirt_domain_persistent", domain=t.name) == 0
    tb.virsh("autostart", g.name)
    try:
        samples = exporter.scrape()  # a list call per scrape: no event to wait for
        check_flags(samples, g.name)
        assert samples.get("libvirt_domain_autostart", domain=g.name) == 1
    finally:
        tb.virsh("autostart", "--disable", g.name)
    check_flags(exporter.scrape(), g.name)


# --- metadata labels and the title: virsh metadata / desc --title, changed while running ---------


def virsh_metadata_labels(name: str) -> Dict[str, str]:
    """team and role as `virsh metadata --uri NS` prints the element (read here with ElementTree)."""
    root = ET.fromstring(tb.virsh("metadata", name, "--uri", NS))
    role = root.find("{%s}role" % NS)
    if role is None:
        role = root.find("role")
    return {"team": root.get("team", ""), "role": " ".join((role.text or "").split()) if role is not None else ""}


def set_metadata(name: str, team: str, role: str) -> None:
    xml = ET.Element("app", team=team)
    ET.SubElement(xml, "role").text = role
    tb.virsh("metadata", name, "--uri", NS, "--key", "app", "--live", "--set", ET.tostring(xml, encoding="unicode"))


def set_title(name: str, title: str) -> None:
    tb.virsh("desc", name, "--title", "--live", "--new-desc", title)


def virsh_title(name: str) -> str:
    return tb.virsh("desc", name, "--title", "--live").strip()


def labels_now(samples: Samples, name: str) -> Optional[Dict[str, str]]:
    found = samples.series("libvirt_domain_metadata_info", domain=name)
    return found[0][0] if len(found) == 1 else None


def title_now(samples: Samples, name: str) -> Optional[str]:
    found = samples.series("libvirt_domain_info", domain=name)
    return found[0][0].get("title") if len(found) == 1 else None


def test_metadata_labels_and_title_follow_virsh_while_the_exporter_runs(exporter, guests):
    g = guests["pinned"]
    first = exporter.scrape()
    assert labels_now(first, g.name) == {"domain": g.name, "team": "", "role": ""}, "no metadata yet: empty values"
    for team, role, title in (("blue", "database", "Title one"), ("green", "web  front\nend", "Title two")):
        set_metadata(g.name, team, role)
        set_title(g.name, title)
        want = dict(virsh_metadata_labels(g.name), domain=g.name)
        want_title = virsh_title(g.name)
        assert want["team"] == team and want_title == title, (want, want_title)
        scrape_until(exporter, "metadata labels %s and title %r" % (want, want_title),
                     lambda s, w=want, t=want_title: labels_now(s, g.name) == w and title_now(s, g.name) == t)


def test_label_values_are_bounded_and_escaped(exporter, guests):
    g = guests["pinned"]
    awkward = 'a "quoted" \\ back\\slash, ' + "x" * 300
    set_metadata(g.name, awkward, "r")
    set_title(g.name, "t" * 500)
    want_team = virsh_metadata_labels(g.name)["team"]
    assert want_team == awkward
    samples = scrape_until(exporter, "the long label values",
                           lambda s: (labels_now(s, g.name) or {}).get("role") == "r"
                           and len(title_now(s, g.name) or "") > 100)
    team = labels_now(samples, g.name)["team"]
    # The parser gives back the unescaped value: its start equals virsh's, its length is capped.
    assert len(team) == 128 and team.endswith("…") and want_team.startswith(team[:-1]), team
    assert title_now(samples, g.name) == "t" * 127 + "…"


# --- the per-vCPU switch -------------------------------------------------------------------------


def vcpu_sums(stats: Dict[str, object], field: str) -> float:
    return sum(float(v) for k, v in stats.items() if re.match(r"^vcpu\.\d+\.%s$" % field, k)) / NS_PER_S


@pytest.mark.parametrize("per_vcpu", [True, False], ids=["per-vcpu", "no-per-vcpu"])
def test_per_vcpu_switch_keeps_counts_and_gives_sums(guests, per_vcpu):
    g = guests["pinned"]
    # Pinned, so that pin series exist to be dropped (idempotent with the pinning test's change).
    tb.virsh("vcpupin", g.name, "1", str((os.cpu_count() or 1) - 1), "--live")
    tb.virsh("emulatorpin", g.name, "0", "--live")
    flag = "--collector.vcpu.per-vcpu" if per_vcpu else "--no-collector.vcpu.per-vcpu"
    with _exporter(guests, flag) as exp:
        before = g.domstats("vcpu")
        text = exp.scrape_text()
        after = g.domstats("vcpu")
    samples = Samples.parse(text)
    with_vcpu = sorted({n for (n, labels), _v in samples.values.items() if "vcpu" in dict(labels)})
    if per_vcpu:
        assert {"libvirt_domain_vcpu_seconds_total", "libvirt_domain_vcpu_state",
                "libvirt_domain_vcpu_pin_info"} <= set(with_vcpu), with_vcpu
    else:
        assert with_vcpu == [], "series with a vcpu label despite --no-collector.vcpu.per-vcpu: %s" % with_vcpu
    assert samples.get("libvirt_domain_vcpus", domain=g.name) == after["vcpu.current"] == 2
    assert samples.get("libvirt_domain_vcpus_maximum", domain=g.name) == after["vcpu.maximum"]
    assert samples.series("libvirt_domain_emulator_pin_info", domain=g.name)
    for field, name in (("time", "libvirt_domain_vcpus_seconds_total"),
                        ("delay", "libvirt_domain_vcpus_delay_seconds_total"),
                        ("wait", "libvirt_domain_vcpus_wait_seconds_total")):
        got = samples.get(name, domain=g.name)
        if per_vcpu:
            assert got is None, "%s beside the per-vCPU series it sums" % name
            continue
        assert got is not None, name
        assert vcpu_sums(before, field) <= got <= vcpu_sums(after, field), (name, got)

