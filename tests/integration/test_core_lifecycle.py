"""The core issue's "Done when", lifecycle part: a guest defined, started, stopped and undefined while
the exporter runs shows up and disappears on the next scrape; a defined but inactive domain exports
its info and state only; a transient guest is gone once destroyed. State and reason equal virsh's.
"""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET

import pytest

import testbed as tb
from exporterproc import ExporterProcess
from scrape import Samples

TEST_BOUND_S = 90
pytestmark = [pytest.mark.libvirt, pytest.mark.timeout(TEST_BOUND_S, func_only=True)]

# Identity, state, and the two configuration flags (a shut-off domain that starts with the host is
# what libvirt_domain_autostart is most often asked about).
INACTIVE_NAMES = {"libvirt_domain_info", "libvirt_domain_state", "libvirt_domain_state_reason",
                  "libvirt_domain_autostart", "libvirt_domain_persistent"}
VIR_DOMAIN_RUNNING = 1
VIR_DOMAIN_SHUTOFF = 5


@pytest.fixture(scope="module")
def exporter(libvirtd):
    with ExporterProcess(["--libvirt.min-interval", "0", "--libvirt.timeout", "20"]) as exp:
        yield exp


def warnings(exporter: ExporterProcess) -> str:
    lines = [line for line in exporter.log().splitlines() if "level=warn" in line or "level=error" in line]
    return "\n".join(lines[-15:]) or "(none)"


def scrape(exporter: ExporterProcess, name: str, tries: int = 6) -> Samples:
    """A scrape with libvirt_up 1 in which ``name`` is not set apart as unresponsive: other tests on
    this host stop QEMUs on purpose, and a guest booting on a loaded host can be slow, so a late share
    may set a domain apart for a scrape, by design. (Flagged under its UUID instead of its name is a
    bug, retried here and caught by test_core_stats.py::
    test_guest_set_apart_and_back_never_vanishes_nor_shows_its_uuid.)"""
    uuid = tb.virsh("domuuid", name, check=False).strip() or "-"
    for _ in range(tries):
        samples = exporter.scrape()
        assert samples.get("libvirt_up") == 1, "libvirt_up %s; the exporter's warnings:\n%s" % (
            samples.get("libvirt_up"), warnings(exporter))
        flagged = {lab["domain"] for lab, _v in samples.series("libvirt_exporter_domain_unresponsive")}
        if name not in flagged and uuid not in flagged:
            return samples
        time.sleep(0.5)
    raise AssertionError("%s flagged unresponsive in %d scrapes in a row" % (name, tries))


def names_for(samples: Samples, domain: str) -> set:
    return set(samples.names_for_domain(domain))


def assert_state_matches_virsh(samples: Samples, name: str, want_state: int) -> None:
    ref = tb.virsh_domstats(name, "state")
    assert ref["state.state"] == want_state, "virsh says %s is in state %s" % (name, ref["state.state"])
    got = samples.get("libvirt_domain_state", domain=name)
    assert got is not None, "%s (virsh: state %s) is missing from the scrape altogether, not flagged " \
        "unresponsive" % (name, ref["state.state"])
    assert got == ref["state.state"], "%s: libvirt_domain_state %s, virsh %s" % (name, got, ref["state.state"])
    assert samples.get("libvirt_domain_state_reason", domain=name) == ref["state.reason"], (
        "%s: libvirt_domain_state_reason %s, virsh %s" % (
            name, samples.get("libvirt_domain_state_reason", domain=name), ref["state.reason"]))


def info_only_violations(samples: Samples, name: str, uuid: str, phase: str) -> list:
    """What an inactive domain exports beyond its info and state (the issue: "info and state only")."""
    assert samples.series("libvirt_domain_info", domain=name, uuid=uuid), "%s: no libvirt_domain_info" % name
    assert INACTIVE_NAMES <= names_for(samples, name), "%s %s: info or state missing" % (phase, name)
    extra = sorted(names_for(samples, name) - INACTIVE_NAMES)
    return ["%s: %s" % (phase, ", ".join(extra))] if extra else []


def test_guest_defined_started_stopped_undefined_while_running(exporter, testbed):
    pid = exporter.proc.pid
    g = testbed.make_guest("blank", start=False)
    uuid = g.uuid

    defined = scrape(exporter, g.name)
    violations = info_only_violations(defined, g.name, uuid, "defined, never started")
    assert_state_matches_virsh(defined, g.name, VIR_DOMAIN_SHUTOFF)

    g.start()
    running = scrape(exporter, g.name)
    assert_state_matches_virsh(running, g.name, VIR_DOMAIN_RUNNING)
    got = names_for(running, g.name)
    for name in ("libvirt_domain_cpu_seconds_total", "libvirt_domain_vcpus", "libvirt_domain_memory_current_bytes",
                 "libvirt_domain_block_read_bytes_total", "libvirt_domain_interface_receive_bytes_total"):
        assert name in got, "running %s has no %s: %s" % (g.name, name, sorted(got))
    assert running.series("libvirt_domain_info", domain=g.name, uuid=uuid)
    assert running.series("libvirt_domain_block_info", domain=g.name, target="vda")

    g.destroy()
    stopped = scrape(exporter, g.name)
    violations += info_only_violations(stopped, g.name, uuid, "destroyed")
    assert_state_matches_virsh(stopped, g.name, VIR_DOMAIN_SHUTOFF)

    g.undefine()
    assert not tb.domain_exists(g.name)
    gone = scrape(exporter, g.name)
    assert names_for(gone, g.name) == set(), "undefined %s still exported: %s" % (
        g.name, sorted(names_for(gone, g.name)))
    leftovers = [(n, dict(labels)) for (n, labels) in gone.values if uuid in dict(labels).values()]
    assert not leftovers, "series still naming the undefined domain's uuid: %s" % leftovers
    assert exporter.proc.poll() is None and exporter.proc.pid == pid
    # Checked last so that the phases after it ran too. libvirt 9.0 here returns cpu.*, balloon.current/
    # maximum, vcpu.current/maximum and block.N.{name,path,allocation,capacity,physical} for a shut-off
    # domain (cpu.time of a domain that never ran is tens of seconds: not the guest's); the core
    # collectors pass them on. Fix outside this file: skip inactive domains (DomainStats.active) in the
    # cpu, vcpu, memory and block collectors, or keep only state.* of inactive domains in the sampler.
    assert not violations, ("a defined but inactive domain must export its info and state only; %s also "
                            "exported:\n  %s" % (g.name, "\n  ".join(violations)))


def test_restarted_guest_keeps_its_identity_and_resets_counters(exporter, testbed):
    g = testbed.make_guest("busy")
    first = scrape(exporter, g.name)
    cpu_before = first.get("libvirt_domain_cpu_seconds_total", domain=g.name)
    assert cpu_before is not None
    time.sleep(1.0)
    g.destroy()
    g.start()
    # A new QEMU: the counter starts again from zero; the exporter shows the new QEMU's value, not the
    # old one.
    lo = tb.virsh_domstats(g.name, "cpu")["cpu.time"] / 1e9
    again = scrape(exporter, g.name)
    hi = tb.virsh_domstats(g.name, "cpu")["cpu.time"] / 1e9
    assert_state_matches_virsh(again, g.name, VIR_DOMAIN_RUNNING)
    cpu_after = again.get("libvirt_domain_cpu_seconds_total", domain=g.name)
    assert cpu_after is not None and lo <= cpu_after <= hi, (
        "cpu after restart %r outside virsh's bracket [%r, %r] (before restart: %r)" % (cpu_after, lo, hi, cpu_before))
    assert again.series("libvirt_domain_info", domain=g.name, uuid=g.uuid)


def test_transient_guest_appears_and_disappears(exporter, testbed):
    g = testbed.make_guest("blank", persistent=False)
    uuid = g.uuid
    running = scrape(exporter, g.name)
    assert_state_matches_virsh(running, g.name, VIR_DOMAIN_RUNNING)
    root = ET.fromstring(g.live_xml())
    assert running.series("libvirt_domain_info", domain=g.name, uuid=uuid, type=root.get("type"))
    assert "libvirt_domain_cpu_seconds_total" in names_for(running, g.name)

    g.destroy()   # a transient domain is undefined when it stops
    assert not tb.domain_exists(g.name)
    gone = scrape(exporter, g.name)
    assert names_for(gone, g.name) == set(), "destroyed transient %s still exported: %s" % (
        g.name, sorted(names_for(gone, g.name)))
