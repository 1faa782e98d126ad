"""libvirt 11 / QEMU 10 (the second hypervisor): every raw series the core tests check equals
`virsh domstats --raw` read from that host around the scrape (the core tests' mapping and
comparison, tests/integration/test_core_stats.py, pointed at the other URI).

MHz, NUMA and watermarks are checked against an exporter running on that host as it would be
installed: inside the container (tests/hypervisor2.py), with Debian 13's Python and libraries, where
it reads that host's QEMU pid files and /proc/<pid>/numa_maps. Its references are read there too, in
the same window: `virsh` against that libvirtd, /proc, `qemu-img` and `blockdev` inside the container.
They reuse the host tests' reference helpers (tests/integration/cpu_numa_harness.py,
tests/watermark_bed.py, tests/integration/test_watermark.py)."""

from __future__ import annotations

import contextlib
import functools
import re
import subprocess
import time
from typing import Dict, Iterator, Tuple

import pytest

import testbed as tb
import watermark_bed as wb
from bounds import wait_for
from hypervisor2 import InsideExporter, run_inside, share_block_device
from integration.cpu_numa_harness import (
    capabilities_cells,
    freecell_kib,
    label_values,
    nodememstats_kib,
    numa_maps_kib_by_node,
    status_vm_rss_kib,
    value,
)
from integration.test_core_stats import GROUPS, compare, domain_series, expected_series
from integration.test_watermark import GROW_TIMEOUT_S, LIMIT, WM_FLAGS, check_sizes_and_rule, writer
from scrape import Series

from .conftest import domstats_at, exporter_at, virsh_at

pytestmark = [pytest.mark.timeout(180, func_only=True)]
GROUP_FLAGS = [tb._GROUP_FLAGS[g] for g in GROUPS]  # noqa: SLF001 - the test bed's own table


@pytest.fixture
def busy_there(bed, hv2):
    """A busy guest (disk with iothread, tap, balloon) started on the second hypervisor."""
    guest = bed.make_guest("busy", start=False, persistent=True)
    virsh_at(hv2, "create", str(guest.directory / "domain.xml"))
    wait_for(lambda: int(domstats_at(hv2, guest.name, "--block").get("block.0.rd.reqs", 0)) >= 1, 120,
             "%s to boot on the second hypervisor" % guest.name, 0.3)
    return guest


def test_core_series_equal_virsh_domstats_on_libvirt_11(hv2, busy_there):
    assert "11." in virsh_at(hv2, "version", "--daemon")
    name = busy_there.name
    with exporter_at(hv2) as exp:
        for _attempt in range(3):
            before = domstats_at(hv2, name, *GROUP_FLAGS, "--backing")
            samples = exp.scrape()
            after = domstats_at(hv2, name, *GROUP_FLAGS, "--backing")
            expected = expected_series(name, before)
            failures, only_wandering = compare(expected, domain_series(samples, name), before, after)
            if not failures or not only_wandering:
                break
    assert not failures, "libvirt 11: exporter vs virsh domstats --raw:\n  " + "\n  ".join(failures)
    for probe in ("state.state", "cpu.time", "balloon.current", "vcpu.current", "net.count", "block.count"):
        assert probe in before, probe
    assert len(expected) > 30, sorted(expected)


KIB = 1024


def _core_mhz(uri: str) -> float:
    m = re.search(r"CPU frequency:\s+(\d+)", virsh_at(uri, "nodeinfo"))
    assert m
    return float(m.group(1))


class SeriesScrapes:
    """An exporter process scraped into {(name, sorted labels): value}, the form the host tests'
    helpers take."""

    def __init__(self, exp: InsideExporter) -> None:
        self.exp = exp

    def scrape(self) -> Series:
        return {(n, tuple(sorted(labels))): v for (n, labels), v in self.exp.scrape().values.items()}


@contextlib.contextmanager
def inside_exporter(*flags: str) -> Iterator[SeriesScrapes]:
    with InsideExporter(["--libvirt.min-interval", "0", *flags]) as exp:
        yield SeriesScrapes(exp)


def _mhz_window(exp: SeriesScrapes, uri: str, name: str) -> Tuple[Series, float]:
    """Two scrapes 2 s apart between two `virsh domstats --cpu-total` readings: (the second scrape, the
    MHz of ``name`` from virsh's cpu.time delta times that host's core MHz)."""
    t0 = time.monotonic()
    cpu0 = domstats_at(uri, name, "--cpu-total")["cpu.time"]
    exp.scrape()
    time.sleep(2)
    s = exp.scrape()
    cpu1 = domstats_at(uri, name, "--cpu-total")["cpu.time"]
    t1 = time.monotonic()
    return s, (cpu1 - cpu0) / 1e9 / (t1 - t0) * _core_mhz(uri)


def _placement_there(pid: int) -> Tuple[Dict[str, int], int]:
    """({node: KiB} from /proc/<pid>/numa_maps, VmRSS KiB) of a process inside the container, read in
    one go."""
    out = run_inside("sh", "-c", 'cat "/proc/$0/numa_maps" && echo "--- status" && cat "/proc/$0/status"', str(pid))
    numa_maps, _, status = out.partition("--- status\n")
    return numa_maps_kib_by_node(numa_maps), status_vm_rss_kib(status)


def _numa_cells(s: Series, name: str) -> Dict[str, float]:
    return label_values(s, "libvirt_domain_numa_memory_bytes", "cell", domain=name)


def test_mhz_and_numa_from_an_exporter_on_libvirt_11(hv2, busy_there):
    name = busy_there.name
    there = functools.partial(virsh_at, hv2)
    pid = int(run_inside("cat", "/run/libvirt/qemu/%s.pid" % name).strip())
    cells = {str(c) for c in capabilities_cells(there)}
    with inside_exporter("--collector.numa.interval", "1") as exp:
        wb.wait_for(lambda: _numa_cells(exp.scrape(), name), 30, "the exporter's first numa_maps read of %s" % name)
        numa_before, rss_before = _placement_there(pid)
        # the reader reads every second: the second scrape's placement is read inside this window
        s, reference_mhz = _mhz_window(exp, hv2, name)
        numa_after, rss_after = _placement_there(pid)
        free_ref = freecell_kib(there)
        stats_ref = {c: nodememstats_kib(int(c), there) for c in cells}

    mhz = value(s, "libvirt_domain_cpu_usage_mhz", domain=name)
    print("MHz of %s on libvirt 11: exporter %s, virsh %.0f" % (name, mhz, reference_mhz))
    # the exporter's interval lies inside virsh's (scheduling on a shared host moves both a little)
    assert mhz == pytest.approx(reference_mhz, rel=0.25), (mhz, reference_mhz)
    assert value(s, "libvirt_host_cpu_core_mhz") == _core_mhz(hv2)

    # per-VM placement, as numa_maps inside the container has it (the same kernel pages VmRSS counts)
    per_cell = _numa_cells(s, name)
    print("numa_maps of %s (pid %d there): exporter %s, numa_maps %s..%s KiB, VmRSS %d..%d KiB" % (
        name, pid, per_cell, numa_before, numa_after, rss_before, rss_after))
    assert set(per_cell) == cells
    for cell in cells:
        # read between the two references: within them, give or take 1 % (QEMU's own allocations)
        low, high = sorted(reference.get(cell, 0) * KIB for reference in (numa_before, numa_after))
        assert 0.99 * low <= per_cell[cell] <= 1.01 * high, (cell, per_cell[cell], low, high)
    assert sum(per_cell.values()) == pytest.approx(rss_before * KIB, rel=0.05)
    assert sum(per_cell.values()) == pytest.approx(rss_after * KIB, rel=0.05)
    assert sum(label_values(s, "libvirt_domain_numa_vcpus", "cell", domain=name).values()) == 1

    # host cells, as that libvirtd has them
    for cell in cells:
        assert value(s, "libvirt_host_numa_cell_memory_bytes", cell=cell) == stats_ref[cell]["total"] * KIB
        assert value(s, "libvirt_host_numa_cell_memory_free_bytes", cell=cell) == pytest.approx(
            free_ref[cell] * KIB, rel=0.01)


def _grow_there(uri: str, name: str, past_bytes: int) -> None:
    wb.wait_for(lambda: int(domstats_at(uri, name, "--block").get("block.0.allocation", 0)) > past_bytes,
                GROW_TIMEOUT_S, "allocation of %s past %d" % (name, past_bytes), 0.1)


def test_watermark_on_libvirt_11_matches_qemu_img_and_domblkinfo_there(bed, hv2):
    """A writer guest's thin qcow2 straight on a loop device, run on the second hypervisor: below the
    watermark and past it, with the guest suspended, its sizes equal `virsh domblkinfo` and domstats of
    that libvirtd, `qemu-img info` and `blockdev` inside the container, and the watermark values follow
    the rule (the host test's check, tests/integration/test_watermark.py, read there)."""
    guest = wb.make_writer(bed, writer(physical_mib=64, writes=56), start=False)
    share_block_device(guest.disk_path)
    virsh_at(hv2, "create", str(guest.directory / "domain.xml"))
    there = wb.Host(virsh=functools.partial(virsh_at, hv2), run=run_inside)
    with inside_exporter(*WM_FLAGS) as exp:
        _grow_there(hv2, guest.name, 4 * wb.MIB)
        virsh_at(hv2, "suspend", guest.name)
        below = check_sizes_and_rule(exp, guest, there)
        assert below["headroom"] > LIMIT, "the writer outran the test: suspend came too late"
        virsh_at(hv2, "resume", guest.name)
        _grow_there(hv2, guest.name, 64 * wb.MIB - LIMIT + wb.MIB)
        virsh_at(hv2, "suspend", guest.name)
        past = check_sizes_and_rule(exp, guest, there)
        assert past["headroom"] < LIMIT
    print("watermark of %s on libvirt 11: allocation %d then %d of %d" % (
        guest.name, below["allocation"], past["allocation"], past["physical"]))


def test_listings_on_a_libvirtd_without_a_storage_driver(hv2, busy_there):
    """The container's libvirtd has only the QEMU driver: `virsh pool-list` fails there. The exporter
    reports no pools with the storage_pool collector succeeding, and the domain's persistent and
    autostart flags as `virsh dominfo` on that host gives them."""
    refused = subprocess.run(["virsh", "-c", hv2, "pool-list"], capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0 and "not supported" in refused.stderr, refused.stderr
    info = dict(line.split(":", 1) for line in virsh_at(hv2, "dominfo", busy_there.name).splitlines() if ":" in line)
    flag = {"yes": 1.0, "no": 0.0, "enable": 1.0, "disable": 0.0}
    with inside_exporter() as exp:
        series = exp.scrape()
    domain = (("domain", busy_there.name),)
    assert series[("libvirt_domain_persistent", domain)] == flag[info["Persistent"].strip()]
    assert series[("libvirt_domain_autostart", domain)] == flag[info["Autostart"].strip()]
    assert series[("libvirt_exporter_collector_success", (("collector", "storage_pool"),))] == 1
    assert not [name for name, _labels in series if name.startswith("libvirt_storage_pool_")]


def test_hypervisor2_is_its_own_host(hv2):
    """Its own hostname and host UUID (equal UUIDs refuse a migration), and libvirt 11 / QEMU 10."""
    host_caps, other_caps = (subprocess.run(["virsh", "-c", uri, "capabilities"], capture_output=True, text=True,
                                            timeout=60).stdout for uri in (tb.URI, hv2))
    uuid = re.compile(r"<host>\s*<uuid>([^<]+)</uuid>")
    assert uuid.search(host_caps).group(1) != uuid.search(other_caps).group(1)
    assert virsh_at(hv2, "hostname").strip() != virsh_at(tb.URI, "hostname").strip()
    version = virsh_at(hv2, "version", "--daemon")
    assert re.search(r"daemon: 11\.", version) and re.search(r"QEMU 10\.", version), version
