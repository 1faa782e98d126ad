"""NUMA and host memory against the real test bed (issue 5). These hosts have one NUMA cell: the
multi-cell arithmetic is proven with fixtures (tests/calc, tests/source); here the single-cell
behaviour is compared with virsh freecell / nodememstats / vcpuinfo, /proc/meminfo and VmRSS."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

import testbed as tb

from .cpu_numa_harness import (
    capabilities_cells,
    freecell_kib,
    label_values,
    meminfo_kib,
    nodememstats_kib,
    running_exporter,
    value,
    vm_rss_kib,
    wait_for,
)

pytestmark = [pytest.mark.libvirt, pytest.mark.timeout(180, func_only=True)]

KIB = 1024
COLLECTORS = ("host", "host_memory", "numa")
REPO = Path(__file__).resolve().parents[2]


def test_host_memory_and_cells_match_virsh_and_meminfo(libvirtd):
    cells = capabilities_cells()
    with running_exporter(only=COLLECTORS) as ex:
        s = ex.scrape()
        # references in the same second
        free_ref = freecell_kib()
        stats_ref = {str(c): nodememstats_kib(c) for c in cells}
        meminfo = meminfo_kib()

    assert set(label_values(s, "libvirt_host_numa_cell_memory_bytes", "cell")) == {str(c) for c in cells}
    for cell, cpus in cells.items():
        c = str(cell)
        assert value(s, "libvirt_host_numa_cell_memory_bytes", cell=c) == stats_ref[c]["total"] * KIB
        assert value(s, "libvirt_host_numa_cell_memory_free_bytes", cell=c) == pytest.approx(
            free_ref[c] * KIB, rel=0.01)
        assert value(s, "libvirt_host_numa_cell_memory_free_bytes", cell=c) == pytest.approx(
            stats_ref[c]["free"] * KIB, rel=0.01)
        assert value(s, "libvirt_host_numa_cell_cpus", cell=c) == len(cpus)

    assert value(s, "libvirt_host_memory_bytes") == meminfo["MemTotal"] * KIB
    assert value(s, "libvirt_host_memory_free_bytes") == pytest.approx(meminfo["MemFree"] * KIB, rel=0.01)
    # cells are reported as libvirt has them, never scaled to the host total (here they differ)
    cell_sum = sum(label_values(s, "libvirt_host_numa_cell_memory_bytes", "cell").values())
    assert cell_sum == sum(stats_ref[str(c)]["total"] for c in cells) * KIB


def test_strict_numatune_guest_memory_is_in_cell_0_and_matches_rss(testbed):
    guest = testbed.make_guest("idle", memory_mib=128, numatune_nodeset="0")
    guest.wait_booted()
    cells = capabilities_cells()
    with running_exporter(numa_interval_s=1.0, only=COLLECTORS) as ex:
        wait_for(lambda: label_values(ex.scrape(), "libvirt_domain_numa_memory_bytes", "cell", domain=guest.name),
                 30, "the first numa_maps read of the guest")
        time.sleep(2.5)  # let the reader take a fresh reading within the bracket below
        rss_before = vm_rss_kib(guest.pid) * KIB
        placement = ex.numa_reader.snapshot().domains[guest.uuid]
        s = ex.scrape()
        rss_after = vm_rss_kib(guest.pid) * KIB

    per_cell = label_values(s, "libvirt_domain_numa_memory_bytes", "cell", domain=guest.name)
    total = sum(per_cell.values())
    print("numa_maps of %s: %d bytes, VmRSS %d..%d, read in %.2f ms" % (
        guest.name, total, rss_before, rss_after, placement.duration_s * 1e3))
    assert set(per_cell) == {str(c) for c in cells}
    assert per_cell["0"] == total > 0
    assert all(v == 0 for c, v in per_cell.items() if c != "0")
    assert total == pytest.approx(rss_before, rel=0.05)
    assert total == pytest.approx(rss_after, rel=0.05)
    assert value(s, "libvirt_domain_numatune_info", domain=guest.name, mode="strict", nodeset="0") == 1
    # the guest's own read is clean (the host-wide health metric also covers other runs' guests,
    # which come and go on these shared machines)
    assert placement.error == ""
    assert label_values(s, "libvirt_exporter_numa_readable", "reason")


def _vcpu_cpus(name: str) -> dict:
    """{vcpu: cpu} from `virsh vcpuinfo`."""
    text = tb.virsh("vcpuinfo", name)
    vcpus = [int(v) for v in re.findall(r"^VCPU:\s+(\d+)", text, re.M)]
    cpus = [int(c) for c in re.findall(r"^CPU:\s+(\d+)", text, re.M)]
    assert len(vcpus) == len(cpus) > 0
    return dict(zip(vcpus, cpus))


def test_vcpu_placement_matches_vcpuinfo(testbed):
    guest = testbed.make_guest("busy", vcpus=2)
    guest.wait_booted()
    cells = capabilities_cells()
    all_cpus = sorted(c for cpus in cells.values() for c in cpus)
    # pin each vCPU to its own CPU so where it last ran holds still while both sides look
    for vcpu in (0, 1):
        tb.virsh("vcpupin", guest.name, str(vcpu), str(all_cpus[(vcpu + 1) % len(all_cpus)]), "--live")
    with running_exporter(numa_interval_s=1.0, only=COLLECTORS) as ex:
        def settled():
            before = _vcpu_cpus(guest.name)
            time.sleep(2.5)  # > interval: the reader has read the pinned threads since `before`
            snap = ex.numa_reader.snapshot().domains.get(guest.uuid)
            series = ex.scrape()
            after = _vcpu_cpus(guest.name)
            return (before, snap, series) if before == after and snap is not None else None

        vcpuinfo, placement, s = wait_for(settled, 60, "vcpuinfo to hold still across a reader refresh", 0)

    assert placement.vcpu_cpus == vcpuinfo  # every vCPU, the same CPU as virsh vcpuinfo
    owner = {cpu: cell for cell, cpus in cells.items() for cpu in cpus}
    expected = {str(c): 0 for c in cells}
    for cpu in vcpuinfo.values():
        expected[str(owner[cpu])] += 1
    assert label_values(s, "libvirt_domain_numa_vcpus", "cell", domain=guest.name) == expected
    assert sum(expected.values()) == 2


CHILD = r"""
import json, sys, time
sys.path[:0] = [%(tests)r, %(repo)r]
from integration.cpu_numa_harness import running_exporter, value, wait_for
COLLECTORS = ("host", "host_memory", "numa")

def after_first_read(ex):
    s = ex.scrape()
    return s if value(s, "libvirt_exporter_numa_readable", reason="") is None else None

with running_exporter(numa_interval_s=1.0, only=COLLECTORS) as ex:
    wait_for(lambda: after_first_read(ex), 30, "a NUMA read as an unprivileged user")
    time.sleep(1.5)
    s = ex.scrape()
print(json.dumps([[n, dict(l), v] for (n, l), v in s.items()]))
"""


def _drop_to_nobody():
    os.setgid(65534)
    os.setgroups([])
    os.setuid(65534)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to start an exporter as another user")
def test_unprivileged_exporter_keeps_host_cells_and_says_why(testbed):
    guest = testbed.make_guest("idle")
    guest.wait_booted()
    code = CHILD % {"tests": str(REPO / "tests"), "repo": str(REPO)}
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/tmp", "PYTHONDONTWRITEBYTECODE": "1"}
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd="/",
                       env=env, preexec_fn=_drop_to_nobody)
    assert p.returncode == 0, p.stderr[-3000:]
    s = {(n, tuple(sorted(labels.items()))): v for n, labels, v in json.loads(p.stdout.strip().splitlines()[-1])}

    # numa_maps needs ptrace access to QEMU: the memory series are absent and the health metric says why
    assert value(s, "libvirt_exporter_numa_readable", reason="permission_denied") == 0
    assert label_values(s, "libvirt_domain_numa_memory_bytes", "cell", domain=guest.name) == {}
    # host cells come from libvirt, not /proc/<pid>: still there
    cells = capabilities_cells()
    for cell in cells:
        assert value(s, "libvirt_host_numa_cell_memory_bytes", cell=str(cell)) == \
            nodememstats_kib(cell)["total"] * KIB
    # the vCPU threads' stat files are world-readable: their placement survives
    assert sum(label_values(s, "libvirt_domain_numa_vcpus", "cell", domain=guest.name).values()) == 1
