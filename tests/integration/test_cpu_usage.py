"""CPU MHz against the real test bed (issue 4): per-VM MHz vs virsh domstats, host usage vs /proc/stat,
overhead with a CPU burner on the host, and no value where none can be right.

References are taken by the test itself around the exporter's scrape window; on these shared 2-core
machines only same-window comparisons and the issue's own bounds are used. Whether a window can be used,
and whether giving up is a skip (the host's doing) or a failure, is decided from the test's own
references only: how long its virsh calls took, domains starting or stopping as virsh lists them, the
burner's share from /proc, other work from /proc/stat; never from what the exporter reports about
itself. (Too many skips of bed tests fail the run: tests/skiplimit.py.)
"""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
import time
from typing import Callable, Dict, Optional, Sequence, Tuple

import pytest

import testbed as tb

from .cpu_numa_harness import (
    label_values,
    nodeinfo_core_mhz,
    proc_stat_busy_total,
    running_exporter,
    value,
)

pytestmark = [pytest.mark.libvirt, pytest.mark.timeout(600, func_only=True)]

WINDOW_S = 15.0
# the overhead test needs windows in which no domain on the host started or stopped: shorter ones
SHORT_WINDOW_S = 8.0
# what these tests read; the others' stats groups would only slow the libvirt calls being timed
COLLECTORS = ("host", "cpu_usage")
MHZ = "libvirt_domain_cpu_usage_mhz"
OVERHEAD = "libvirt_host_hypervisor_overhead_mhz"
HOST_USAGE = "libvirt_host_cpu_usage_mhz"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def _proc_cpu_s(pid: int) -> float:
    """utime + stime of a process, seconds (/proc/<pid>/stat fields 14 and 15)."""
    with open("/proc/%d/stat" % pid) as f:
        rest = f.read().rsplit(")", 1)[1].split()
    return (int(rest[14 - 3]) + int(rest[15 - 3])) / CLK_TCK


@dataclasses.dataclass
class Window:
    first: dict                  # the exporter's scrape A
    series: dict                 # the exporter's scrape B
    guest_ref_mhz: Dict[str, float]
    # Every running domain's MHz from virsh (other sessions' guests too), for the host's overhead.
    all_guests_ref_mhz: float
    host_ref_mhz: float          # Neat's host busy MHz from /proc/stat read right before A and before B
    process_ref_mhz: Dict[int, float]
    # How long the test's own virsh calls took at the most. They read what the exporter's call reads
    # (every domain's cpu group), so they stand for the exporter's call too: the exporter stamps a
    # sample before its libvirt call, the test stamps virsh at the middle of its call, and the two
    # windows' lengths differ by at most about twice this.
    virsh_s: float
    # Whether a domain of this host started or stopped during the window (virsh list before A and
    # after B): the exporter then rightly withholds the overhead.
    churn: bool

    def overhead(self) -> Optional[float]:
        return value(self.series, OVERHEAD)

    def domain_mhz(self) -> Dict[str, float]:
        return label_values(self.series, MHZ, "domain")


# Why a window cannot be used, and whether the cause is the host's (other work, other guests: the
# test may skip) rather than the exporter's (the test fails).
Verdict = Tuple[str, bool]
USABLE: Verdict = ("", True)


def _measurable(w: Window, window_s: float, timed: bool) -> Verdict:
    for name, s in (("A", w.first), ("B", w.series)):
        if value(s, "libvirt_up") != 1:
            return "libvirt_up was not 1 in scrape %s" % name, False
    # the 5 % comparisons of libvirt counters need the timing noise well below 5 % of the window:
    # the host is too loaded to time when the test's own virsh calls took over 1.25 % of it
    if timed and w.virsh_s > 0.0125 * window_s:
        return "virsh's stats calls took %.2f s of a %.0f s window" % (w.virsh_s, window_s), True
    return USABLE


def _running_domain_ids() -> Dict[str, str]:
    """{name: id} of the running domains (`virsh list`): a new ID is a start, a missing name a stop."""
    out = {}
    for line in tb.virsh("list").splitlines()[2:]:
        fields = line.split()
        if len(fields) >= 2:
            out[fields[1]] = fields[0]
    return out


def _cpu_times() -> Tuple[float, Dict[str, int], float]:
    """(monotonic time at the middle of the call, {name: cpu.time} of every running domain, how long
    the call took) from one `virsh domstats --cpu-total` over every domain, as the exporter's bulk
    call reads them."""
    t0 = time.monotonic()
    stats = tb.parse_domstats(tb.virsh("domstats", "--raw", "--cpu-total"))
    t1 = time.monotonic()
    return (t0 + t1) / 2, {n: int(s["cpu.time"]) for n, s in stats.items() if "cpu.time" in s}, t1 - t0


def _host_capacity_mhz(core_mhz: float) -> float:
    m = re.search(r"CPU\(s\):\s+(\d+)", tb.virsh("nodeinfo"))
    assert m
    return core_mhz * int(m.group(1))


def _window(exporter, guests, core_mhz: float, accept: Optional[Callable[[Window], Verdict]] = None,
            budget_s: float = 100.0, window_s: float = WINDOW_S, pids: Sequence[int] = (),
            timed: bool = True) -> Window:
    """Scrape A, wait, scrape B, with the test's own references for that window.

    Each guest's (and process's) reference is read just before scrape A and just before scrape B, so
    it spans the exporter's window with the same lag at both ends; the host reference is two reads of
    /proc/stat, each right before a scrape (as the exporter reads it when its sample starts). While
    ``budget_s`` lasts, a window is taken again when it cannot be measured (libvirt did not answer;
    with ``timed``, its calls were too slow to time) or when ``accept(window)`` says why not (USABLE
    takes it): on these shared machines other test runs start and stop domains (the exporter then
    withholds the overhead) and load the host. When no window is usable the test is skipped with the
    reason if the last reason was the host's, and fails if it was the exporter's: a skip never hides a
    broken exporter.
    """
    deadline = time.monotonic() + budget_s
    tries = 0
    capacity = _host_capacity_mhz(core_mhz)
    names = [g.name for g in guests]
    while True:
        tries += 1
        # past the exporter's --libvirt.min-interval, so scrape A takes a fresh sample, not the last B
        time.sleep(1.0)
        ids_before = _running_domain_ids()
        t_before, before, virsh_before_s = _cpu_times()
        p_before = {pid: (time.monotonic(), _proc_cpu_s(pid)) for pid in pids}
        # /proc/stat right before each scrape: the exporter reads it as a sample starts
        busy0, total0 = proc_stat_busy_total()
        first = exporter.scrape()
        time.sleep(window_s)
        t_after, after, virsh_after_s = _cpu_times()
        p_after = {pid: (time.monotonic(), _proc_cpu_s(pid)) for pid in pids}
        busy1, total1 = proc_stat_busy_total()
        series = exporter.scrape()
        ids_after = _running_domain_ids()
        ref_mhz = {n: core_mhz * (after[n] - before[n]) / ((t_after - t_before) * 1e9)
                   for n in set(before) & set(after)}
        w = Window(
            first=first,
            series=series,
            guest_ref_mhz={n: ref_mhz[n] for n in names},
            all_guests_ref_mhz=sum(ref_mhz.values()),
            host_ref_mhz=capacity * (busy1 - busy0) / (total1 - total0),
            process_ref_mhz={pid: core_mhz * (p_after[pid][1] - p_before[pid][1]) /
                             (p_after[pid][0] - p_before[pid][0]) for pid in pids},
            virsh_s=max(virsh_before_s, virsh_after_s), churn=ids_before != ids_after)
        why, host_cause = _measurable(w, window_s, timed)
        if not why and accept is not None:
            why, host_cause = accept(w)
        if not why:
            return w
        if time.monotonic() + window_s > deadline:
            message = "no usable window in %d tries over %.0f s: %s" % (tries, budget_s, why)
            if host_cause:
                pytest.skip(message)
            pytest.fail(message + " (not the host's doing: the exporter's)")


def _overhead_present(w: Window) -> Verdict:
    if w.overhead() is not None:
        return USABLE
    if w.churn:
        return "the overhead was withheld: a domain started or stopped on this host in the window", True
    return "the overhead was withheld though no domain started or stopped in the window", False


def test_first_scrape_new_and_restarted_domains_have_no_mhz(testbed):
    old = testbed.make_guest("idle")
    # Every scrape here must take its own sample: starting a guest can take less than the default
    # min-interval, and a reused sample would still hold the pair from before the guest existed.
    with running_exporter("--libvirt.min-interval", "0", only=COLLECTORS) as ex:
        first = ex.scrape()
        core = nodeinfo_core_mhz()
        assert value(first, "libvirt_host_cpu_core_mhz") == core
        assert value(first, "libvirt_host_cpu_capacity_mhz") == _host_capacity_mhz(core)
        # nothing to compare with yet: no rates at all
        assert label_values(first, MHZ, "domain") == {}
        assert value(first, HOST_USAGE) is None and value(first, OVERHEAD) is None

        time.sleep(1.0)
        second = ex.scrape()
        assert old.name in label_values(second, MHZ, "domain")
        assert value(second, HOST_USAGE) is not None

        since_s = time.monotonic()
        new = testbed.make_guest("idle")
        seen_new = ex.scrape()
        # a reused sample is older than the guest's start; a fresh one younger (however slow the host)
        assert value(seen_new, "libvirt_exporter_sample_age_seconds") < time.monotonic() - since_s, (
            "served a sample taken before the new guest started")
        assert new.name not in label_values(seen_new, MHZ, "domain")  # its first sample
        assert old.name in label_values(seen_new, MHZ, "domain")
        assert value(seen_new, OVERHEAD) is None  # the new domain's CPU cannot be attributed

        time.sleep(1.0)
        assert new.name in label_values(ex.scrape(), MHZ, "domain")

        pid_before = new.pid
        new.destroy()
        new.start()
        assert new.pid != pid_before
        restarted = ex.scrape()
        assert new.name not in label_values(restarted, MHZ, "domain")
        assert old.name in label_values(restarted, MHZ, "domain")
        time.sleep(1.0)
        assert new.name in label_values(ex.scrape(), MHZ, "domain")


def test_busy_and_idle_guests_and_host_usage_match_references(testbed):
    busy = testbed.make_guest("busy")
    idle = testbed.make_guest("idle")
    busy.wait_booted()
    idle.wait_booted()
    core = nodeinfo_core_mhz()

    def busy_got_half_a_core(w: Window) -> Verdict:
        # the "above half a core" presumes the host leaves the guest that much
        ref = w.guest_ref_mhz[busy.name]
        return USABLE if ref > 0.5 * core else (
            "the busy guest got %.0f of %.0f MHz: the host is oversubscribed by other work" % (ref, core), True)

    with running_exporter(only=COLLECTORS) as ex:
        w = _window(ex, [busy, idle], core, accept=busy_got_half_a_core)
    got, refs = w.domain_mhz(), w.guest_ref_mhz
    print("busy %.0f (ref %.0f)  idle %.1f (ref %.1f) MHz" % (
        got[busy.name], refs[busy.name], got[idle.name], refs[idle.name]))

    assert got[busy.name] == pytest.approx(refs[busy.name], rel=0.05)
    assert got[busy.name] > 0.5 * core
    assert refs[idle.name] < 0.05 * core, "the idle guest was not idle in this window"
    assert got[idle.name] < 0.05 * core


def test_host_usage_matches_proc_stat(testbed):
    busy = testbed.make_guest("busy")
    busy.wait_booted()
    with running_exporter(only=COLLECTORS) as ex:
        # /proc/stat is read right after the sample's timestamp: no libvirt call timing involved
        w = _window(ex, [busy], nodeinfo_core_mhz(), timed=False)
    print("host %.0f (ref %.0f) MHz" % (value(w.series, HOST_USAGE), w.host_ref_mhz))
    assert value(w.series, HOST_USAGE) == pytest.approx(w.host_ref_mhz, rel=0.05)


def test_host_cpu_burner_shows_up_as_hypervisor_overhead(testbed):
    busy = testbed.make_guest("busy")
    idle = testbed.make_guest("idle")
    busy.wait_booted()
    idle.wait_booted()
    core = nodeinfo_core_mhz()
    guests = [busy, idle]

    def quiet_baseline(w: Window) -> Verdict:
        # other work outside guests (other test runs) would be displaced by the burner, not added to
        verdict = _overhead_present(w)
        if verdict[0] or w.overhead() <= 0.5 * core:
            return verdict
        # the host's own account of it: busy CPU beyond our guests' (other guests' work included). The
        # host is to blame only when that account shows the work and the exporter's figure is within it.
        outside = w.host_ref_mhz - sum(w.guest_ref_mhz.values())
        return ("%.0f MHz of other work outside guests on the host (/proc/stat and virsh: %.0f MHz)"
                % (w.overhead(), outside), outside > 0.4 * core and w.overhead() <= outside + 0.1 * core)

    with running_exporter(only=COLLECTORS) as ex:
        ex.scrape()
        base1 = _window(ex, guests, core, accept=quiet_baseline, window_s=SHORT_WINDOW_S)
        burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        try:
            def burner_ran(w: Window) -> Verdict:
                if w.process_ref_mhz[burner.pid] < 0.6 * core:
                    return "the burner got only %.0f MHz" % w.process_ref_mhz[burner.pid], True
                return _overhead_present(w)

            time.sleep(0.5)
            burning = _window(ex, guests, core, accept=burner_ran, window_s=SHORT_WINDOW_S, pids=[burner.pid])
        finally:
            burner.kill()
            burner.wait(10)
        time.sleep(0.5)
        base2 = _window(ex, guests, core, accept=quiet_baseline, window_s=SHORT_WINDOW_S)

    baseline = (base1.overhead() + base2.overhead()) / 2
    burner_mhz = burning.process_ref_mhz[burner.pid]
    reference = burning.host_ref_mhz - burning.all_guests_ref_mhz
    print("overhead: baseline %.0f, with burner %.0f MHz (burner itself %.0f, /proc/stat less virsh's domains "
          "%.0f, half a core %.0f)" % (baseline, burning.overhead(), burner_mhz, reference, core / 2))
    # the burner's own CPU, measured from its /proc/<pid>/stat in the same window, is all overhead
    assert burning.overhead() >= 0.95 * burner_mhz
    assert burning.overhead() - baseline >= 0.5 * core
    # and no more than the host's own account of it: /proc/stat's busy MHz less every running domain's
    # virsh MHz over the same window (the references and the samples start their windows a few ms
    # to a virsh call apart, in which other work may differ: 5 % of the host; measured 0 to 2 MHz
    # apart with the burner)
    capacity = _host_capacity_mhz(core)
    assert burning.overhead() == pytest.approx(reference, abs=0.05 * capacity), (
        "overhead %.0f MHz against /proc/stat less virsh's domains %.0f MHz" % (burning.overhead(), reference))

    got, refs = burning.domain_mhz(), burning.guest_ref_mhz
    assert got[busy.name] == pytest.approx(refs[busy.name], rel=0.05)
    assert refs[idle.name] < 0.05 * core, "the idle guest was not idle in this window"
    assert got[idle.name] < 0.05 * core
