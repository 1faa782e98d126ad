"""libvirt 11 / QEMU 10 (the second hypervisor): every raw series the core tests check equals
`virsh domstats --raw` read from that host around the scrape (the core tests' mapping and
comparison, tests/integration/test_core_stats.py, pointed at the other URI); a busy guest's MHz
agrees with its cpu.time rate times that host's core MHz; the host's NUMA cells match
`virsh nodememstats --cell`.

Scoped down: per-domain NUMA placement and block watermarks read the QEMU pid files and numa_maps of
the hypervisor's own /run and /proc, which an exporter outside that container does not see; they
are not checked here."""

from __future__ import annotations

import re
import subprocess
import time
from typing import Dict

import pytest

import testbed as tb
from bounds import wait_for
from integration.test_core_stats import GROUPS, compare, domain_series, expected_series
from scrape import Samples

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


def _core_mhz(uri: str) -> float:
    m = re.search(r"CPU frequency:\s+(\d+)", virsh_at(uri, "nodeinfo"))
    assert m
    return float(m.group(1))


def test_mhz_and_numa_cells_on_libvirt_11(hv2, busy_there):
    name = busy_there.name
    with exporter_at(hv2) as exp:
        t0 = time.monotonic()
        cpu0 = domstats_at(hv2, name, "--cpu-total")["cpu.time"]
        exp.scrape()
        time.sleep(2)
        s = exp.scrape()
        cpu1 = domstats_at(hv2, name, "--cpu-total")["cpu.time"]
        t1 = time.monotonic()
    mhz = s.get("libvirt_domain_cpu_usage_mhz", domain=name)
    reference = (cpu1 - cpu0) / 1e9 / (t1 - t0) * _core_mhz(hv2)
    print("MHz of %s on libvirt 11: exporter %.0f, virsh %.0f" % (name, mhz, reference))
    # the exporter's interval lies inside virsh's (scheduling on a shared host moves both a little)
    assert mhz == pytest.approx(reference, rel=0.25), (mhz, reference)
    assert s.get("libvirt_host_cpu_core_mhz") == _core_mhz(hv2)
    cells = _cells(s)
    assert cells, "no NUMA cell series"
    for cell, total_bytes in cells.items():
        stats = {k.strip(): int(v.split()[0]) for k, v in (line.split(":", 1) for line in
                 virsh_at(hv2, "nodememstats", "--cell", cell).splitlines() if ":" in line)}
        assert total_bytes == stats["total"] * 1024, (cell, total_bytes, stats)


def _cells(samples: Samples) -> Dict[str, float]:
    return {labels["cell"]: v for labels, v in samples.series("libvirt_host_numa_cell_memory_bytes")}


def test_hypervisor2_is_its_own_host(hv2):
    """Its own hostname and host UUID (equal UUIDs refuse a migration), and libvirt 11 / QEMU 10."""
    host_caps, other_caps = (subprocess.run(["virsh", "-c", uri, "capabilities"], capture_output=True, text=True,
                                            timeout=60).stdout for uri in (tb.URI, hv2))
    uuid = re.compile(r"<host>\s*<uuid>([^<]+)</uuid>")
    assert uuid.search(host_caps).group(1) != uuid.search(other_caps).group(1)
    assert virsh_at(hv2, "hostname").strip() != virsh_at(tb.URI, "hostname").strip()
    version = virsh_at(hv2, "version", "--daemon")
    assert re.search(r"daemon: 11\.", version) and re.search(r"QEMU 10\.", version), version
