"""Every perfmon data source on the real test bed, against an independent reference read in the same
window: the exporter's own sampler (in this process) takes two samples a few seconds apart, the
perfmon engine steps on them with one variable per data source (``max`` over exactly that name, so
the variable's value is the data source's), and virsh and /proc are read just before and just after
each sample.

- VM ``cpuN``, ``vif_N_rx|tx``, ``vbd_<target>_read|write``: the rate × the samples' interval is the
  counter's delta, which lies between the references' deltas (``virsh domstats --vcpu``,
  ``virsh domifstat``, ``virsh domblkstat``; a read after the first sample and before the second
  gives the smallest delta, the other pair the largest). The guest writes all along (the writer boot
  sector), so ``vbd_vda_write`` moves. A guest without an OS never starts its NIC, so QEMU does not
  read the tap and the interface counters hardly move: their check is exact, mostly on zero.
- VM ``memory``, ``memory_internal_free``: ``virsh dommemstat`` actual × 1024, and unused (which only
  a guest balloon driver reports: then both sides lack it).
- host ``cpuN``: (user + nice + system) / (user … softirq) of each /proc/stat line, bracketed as above;
  ``pif_<if>_rx|tx``: /proc/net/dev byte columns (loopback traffic is sent during the step);
  ``memory_total_kib`` = ``virsh nodememstats`` total, ``memory_free_kib`` near its free (it moves
  both ways: a few MiB of slack); ``fs_usage`` = used / (used + available) of ``os.statvfs`` of
  ``--perfmon.fs-path``, and rounded up to a whole percent it is ``df``'s Use% (what perfmon read).
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import socket
import subprocess
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import pytest

import testbed as tb
from inprocess import running_exporter
from virt_exporter.perfmon.config import parse_perfmon_file
from virt_exporter.perfmon.engine import PerfmonEngine
from virt_exporter.source.host import fs_used_fraction

pytestmark = [pytest.mark.libvirt, pytest.mark.timeout(240, func_only=True)]

STEP_S = 5  # seconds between the two samples
FS_PATH = "/"
FREE_SLACK_KIB = 64 * 1024  # host free memory moves both ways between reads ms apart
REL = 1e-9  # float rounding of rate × interval


@dataclasses.dataclass
class VirshReading:
    """One virsh process running domstats --vcpu, domifstat, domblkstat, dommemstat and nodememstats
    back to back (one connection, milliseconds apart), so it brackets a sample tightly."""

    vcpu_ns: Dict[int, int]
    domifstat: Dict[str, int]
    domblkstat: Dict[str, int]
    dommemstat: Dict[str, int]
    nodemem: Dict[str, int]


@dataclasses.dataclass
class ProcReading:
    proc_stat: Dict[int, Tuple[int, int]]      # cpu → (busy, total) jiffies
    net_dev: Dict[str, Tuple[int, int]]        # ifname → (rx bytes, tx bytes)


def read_virsh(guest: tb.Guest) -> VirshReading:
    d, tap, disk = guest.name, guest.interface_dev, guest.disk_target
    out = tb.virsh("domstats --vcpu --raw %s; domifstat %s %s; domblkstat %s %s; dommemstat %s; nodememstats"
                   % (d, d, tap, d, disk, d))
    reading = VirshReading({}, {}, {}, {}, {})
    for line in out.splitlines():
        line = line.strip()
        if m := re.fullmatch(r"vcpu\.(\d+)\.time=(\d+)", line):
            reading.vcpu_ns[int(m.group(1))] = int(m.group(2))
        elif m := re.fullmatch(r"%s (\w+) (-?\d+)" % re.escape(tap), line):
            reading.domifstat[m.group(1)] = int(m.group(2))
        elif m := re.fullmatch(r"%s (\w+) (-?\d+)" % re.escape(disk), line):
            reading.domblkstat[m.group(1)] = int(m.group(2))
        elif m := re.fullmatch(r"(\w+)\s*:\s*(\d+) KiB", line):
            reading.nodemem[m.group(1)] = int(m.group(2))
        elif m := re.fullmatch(r"(\w+) (\d+)", line):
            reading.dommemstat[m.group(1)] = int(m.group(2))
    assert reading.vcpu_ns and reading.domifstat and reading.domblkstat and reading.nodemem, out
    return reading


def read_proc_stat() -> Dict[int, Tuple[int, int]]:
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            m = re.match(r"^cpu(\d+) (.*)$", line)
            if m:
                user, nice, system, idle, iowait, irq, softirq = (int(x) for x in m.group(2).split()[:7])
                out[int(m.group(1))] = (user + nice + system, user + nice + system + idle + iowait + irq + softirq)
    return out


def read_net_dev() -> Dict[str, Tuple[int, int]]:
    out = {}
    with open("/proc/net/dev") as f:
        for line in f.readlines()[2:]:
            name, _, rest = line.partition(":")
            fields = rest.split()
            out[name.strip()] = (int(fields[0]), int(fields[8]))
    return out


def watched_net_devices(most: int = 16) -> List[str]:
    """lo and a bounded number of other devices: a config holds at most 64 variables, and a shared
    host may have many guest and container interfaces."""
    others = sorted(name for name in read_net_dev() if name != "lo")
    return ["lo"] + others[:most]


def read_proc() -> ProcReading:
    return ProcReading(read_proc_stat(), read_net_dev())


def variables(names) -> str:
    """One variable per data source: its value is the source's (max over exactly that name)."""
    return "<config>%s</config>" % "".join(
        '<variable><name value="%s"/><rrd_regex value="^%s$"/><consolidation_fn value="max"/>'
        '<alarm_trigger_level value="1e300"/></variable>' % (n, re.escape(n)) for n in names)


def send_loopback_traffic(count: int = 200, size: int = 1000) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _ in range(count):
            s.sendto(b"v" * size, ("127.0.0.1", 9))  # discard port: nothing listens, the bytes still count


@pytest.fixture(scope="module")
def measured(libvirtd):
    """(virsh readings and /proc readings, each [(before, after) sample 0, (before, after) sample 1],
    the samples' interval, engine rows by (domain or "host", variable), the guest, statvfs before and
    after the second step)."""
    bed = tb.Testbed()
    try:
        # Writes 4 KiB apart, 20 ms between them, for well over a minute after boot.
        guest = bed.make_guest("writer", writer_params=tb.WriterParams(
            stride=8, max_lba=2048 + 8 * 4000, block_device=False))
        guest.wait_booted()
        vm_names = ["cpu0", "vif_0_rx", "vif_0_tx", "vbd_vda_read", "vbd_vda_write", "memory",
                    "memory_internal_free"]
        host_names = (["cpu%d" % c for c in read_proc_stat()] + ["memory_free_kib", "memory_total_kib"]
                      + ["pif_%s_%s" % (i, d) for i in watched_net_devices() for d in ("rx", "tx")])
        host_xml = variables(host_names).replace(
            "</config>", '<variable><name value="fs_usage"/><alarm_trigger_level value="2"/></variable></config>')
        file_config = parse_perfmon_file("<perfmon><host>%s</host><vm>%s</vm></perfmon>"
                                         % (host_xml, variables(vm_names)))
        with running_exporter("--libvirt.min-interval", "0") as exporter:
            app = exporter.app
            engine = PerfmonEngine(app.sampler.get, app.xml_cache.snapshot, file_config, STEP_S, fs_path=FS_PATH)
            refs, samples = [], []
            for k in range(2):
                if k:
                    send_loopback_traffic()
                    time.sleep(STEP_S)
                # virsh outermost, /proc (microseconds) right around the sample
                virsh_before, proc_before = read_virsh(guest), read_proc()
                _, sample = app.sampler.get()
                proc_after, virsh_after = read_proc(), read_virsh(guest)
                assert sample.up and guest.uuid in sample.domains, "the exporter's sample lacks the guest"
                fs_before = os.statvfs(FS_PATH)  # fs_usage is read during the step
                engine.step(sample)
                fs_around_step = (fs_before, os.statvfs(FS_PATH))
                refs.append(((virsh_before, proc_before), (virsh_after, proc_after)))
                samples.append(sample)
            rows = {(r.domain or "host", r.variable): r.value for r in engine.snapshot().rows
                    if r.domain in ("", guest.name)}
        virsh_refs = [(b[0], a[0]) for b, a in refs]
        proc_refs = [(b[1], a[1]) for b, a in refs]
        interval_s = samples[1].monotonic_s - samples[0].monotonic_s
        yield virsh_refs, proc_refs, interval_s, rows, guest, fs_around_step
    finally:
        bed.cleanup()


def counter_bracket(refs, read: Callable[[Any], Optional[int]]) -> Optional[Tuple[int, int]]:
    (b0, a0), (b1, a1) = refs
    values = [read(r) for r in (b0, a0, b1, a1)]
    if None in values:
        return None
    vb0, va0, vb1, va1 = values
    return vb1 - va0, va1 - vb0


def assert_rate(rows, key, refs, interval_s, read, scale=1.0) -> float:
    bracket = counter_bracket(refs, read)
    assert bracket is not None, "%s: no reference reading" % (key,)
    value = rows[key]
    assert value is not None, "%s: the engine has no value for it" % (key,)
    delta = value * interval_s * scale
    lo, hi = bracket
    assert lo - abs(lo) * REL - 1e-6 <= delta <= hi + abs(hi) * REL + 1e-6, (key, value, delta, bracket)
    return delta


def test_vm_cpu_disk_and_interface_rates_equal_virsh_deltas(measured):
    refs, _proc, interval_s, rows, guest = measured[:5]
    d = guest.name
    cpu = assert_rate(rows, (d, "cpu0"), refs, interval_s, lambda r: r.vcpu_ns.get(0), 1e9)
    assert cpu > 0  # the writer's vCPU ran
    written = assert_rate(rows, (d, "vbd_vda_write"), refs, interval_s, lambda r: r.domblkstat.get("wr_bytes"))
    assert written > 0, "the writer guest wrote nothing in the step"
    assert_rate(rows, (d, "vbd_vda_read"), refs, interval_s, lambda r: r.domblkstat.get("rd_bytes"))
    assert_rate(rows, (d, "vif_0_rx"), refs, interval_s, lambda r: r.domifstat.get("rx_bytes"))
    assert_rate(rows, (d, "vif_0_tx"), refs, interval_s, lambda r: r.domifstat.get("tx_bytes"))


def test_vm_memory_equals_the_balloon_stats(measured):
    refs, _proc, _interval_s, rows, guest = measured[:5]
    (_b, after) = refs[1]
    assert rows[(guest.name, "memory")] == after.dommemstat["actual"] * 1024
    if "unused" in after.dommemstat:
        lo, hi = sorted(r.dommemstat["unused"] for r in refs[1])
        assert lo <= rows[(guest.name, "memory_internal_free")] <= hi
    else:  # no balloon driver in the guest: perfmon's data source does not exist
        assert rows[(guest.name, "memory_internal_free")] is None


def test_host_cpus_equal_proc_stat(measured):
    _virsh, refs, _interval_s, rows, _guest = measured[:5]
    (b0, a0), (b1, a1) = refs
    checked = 0
    for cpu in b0.proc_stat:
        value = rows[("host", "cpu%d" % cpu)]
        busy = [r.proc_stat[cpu][0] for r in (b0, a0, b1, a1)]
        total = [r.proc_stat[cpu][1] for r in (b0, a0, b1, a1)]
        lo = max(0, busy[2] - busy[1]) / max(1, total[3] - total[0])
        hi = (busy[3] - busy[0]) / max(1, total[2] - total[1])
        assert value is not None and lo - 1e-9 <= value <= hi + 1e-9, (cpu, value, lo, hi)
        checked += 1
    assert checked == len(b0.proc_stat) >= 1


def test_host_interfaces_equal_proc_net_dev(measured):
    _virsh, refs, interval_s, rows, _guest = measured[:5]
    b0 = refs[0][0]
    common = [i for i in b0.net_dev if all(i in r.net_dev for pair in refs for r in pair)
              and ("host", "pif_%s_rx" % i) in rows]
    assert "lo" in common
    for ifname in common:
        for col, direction in ((0, "rx"), (1, "tx")):
            assert_rate(rows, ("host", "pif_%s_%s" % (ifname, direction)), refs, interval_s,
                        lambda r, i=ifname, c=col: r.net_dev[i][c])
    lo_rx = rows[("host", "pif_lo_rx")] * interval_s
    assert lo_rx >= 200 * 1000  # the loopback datagrams sent during the step


def test_host_memory_equals_nodememstats(measured):
    refs, _proc, _interval_s, rows, _guest = measured[:5]
    before, after = refs[1]
    assert rows[("host", "memory_total_kib")] == after.nodemem["total"]
    lo, hi = sorted((before.nodemem["free"], after.nodemem["free"]))
    assert lo - FREE_SLACK_KIB <= rows[("host", "memory_free_kib")] <= hi + FREE_SLACK_KIB


def used_fraction(st: os.statvfs_result) -> float:
    used = st.f_blocks - st.f_bfree
    return used / (used + st.f_bavail)


def test_fs_usage_equals_statvfs(measured):
    _virsh, _proc, _interval_s, rows, _guest, (before, after) = measured
    value = rows[("host", "fs_usage")]
    lo, hi = sorted((used_fraction(before), used_fraction(after)))
    assert lo - 1e-4 <= value <= hi + 1e-4, (value, lo, hi)


def test_our_fs_fraction_rounded_up_is_dfs_use_percent_which_perfmon_read():
    """perfmon's get_percent_fs_usage is `df`'s Use% / 100, a whole percent rounded up; the engine's
    reading (source.host.fs_used_fraction, what fs_usage is fed) is the exact fraction of the same
    formula (docs/perfmon.md: with a level in whole percent both alarm at the same usage). df is read
    between two of the engine's readings; a write in between moves them apart, so retry."""
    for _ in range(5):
        before = fs_used_fraction(FS_PATH)
        df = subprocess.run(["df", "-P", FS_PATH], capture_output=True, text=True, check=True).stdout
        after = fs_used_fraction(FS_PATH)
        if before == after:
            break
    use_percent = int(df.splitlines()[1].split()[4].rstrip("%"))
    assert math.ceil(before * 100) == use_percent, (before, after, df)
