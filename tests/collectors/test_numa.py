"""collectors.numa on a two-cell host: host cells from the Sample, per-VM placement from a reader over
the recorded fixture tree, numatune info, and the health metric when the reader cannot help."""

from __future__ import annotations

from pathlib import Path

from samples import sample
from virt_exporter.collectors import numa as numa_collector
from virt_exporter.collectors.base import ScrapeContext
from virt_exporter.sample import DomainInfo, DomainStats, HostFacts, HostMemory, Sample
from virt_exporter.source.numa import NumaPlacementReader

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures/numa/twonode"
CELL_CPUS = {0: list(range(8)), 1: list(range(8, 16))}
# cells need not add up to the host total: never corrected
CELLS = {0: HostMemory(total_kib=16_000_000, free_kib=9_000_000), 1: HostMemory(total_kib=4_000_000, free_kib=1_000)}


def _sample(pid: int = 4242, with_topology: bool = True) -> Sample:
    doms = [DomainStats("u", "multi", {"state.state": 1}), DomainStats("off", "stopped", {"state.state": 5})]
    if not with_topology:
        return sample(1.0, doms, qemu_pids={"u": pid})
    host = HostFacts(hostname="h", libvirt_version="9.0.0", hypervisor_version="7.2.0", cpu_model="x86_64",
                     cell_cpus=CELL_CPUS)
    return sample(1.0, doms, qemu_pids={"u": pid}, host=host, cell_memory=CELLS)


def _info(numatune):
    return DomainInfo(uuid="u", name="multi", os_type="hvm", arch="x86_64", machine="pc", domain_type="kvm",
                      vcpus=4, memory_kib=4194304, numatune=numatune)


def _collect(sample: Sample, reader=None, numatune=("strict", "0")):
    ctx = ScrapeContext(current=sample, previous=None, domain_info={"u": _info(numatune)},
                        numa=reader.snapshot() if reader is not None else None)
    out = {}
    for fam in numa_collector.collect(ctx):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _reader() -> NumaPlacementReader:
    reader = NumaPlacementReader(root=str(FIXTURE), interval_s=30)
    reader.set_targets({"u": ("multi", 4242)})
    reader.refresh_once()
    return reader


def test_host_cells_and_placement_on_two_cells():
    m = _collect(_sample(), _reader())
    assert m[("libvirt_host_numa_cell_memory_bytes", (("cell", "0"),))] == 16_000_000 * 1024
    assert m[("libvirt_host_numa_cell_memory_free_bytes", (("cell", "1"),))] == 1_000 * 1024
    assert m[("libvirt_host_numa_cell_cpus", (("cell", "1"),))] == 8
    mem = {c: m[("libvirt_domain_numa_memory_bytes", (("cell", c), ("domain", "multi")))] for c in "01"}
    assert mem == {"0": 1_090_756_608, "1": 2_038_497_280}
    # vCPUs last ran on CPUs 1, 9, 4, 12: two in each cell
    vcpus = {c: m[("libvirt_domain_numa_vcpus", (("cell", c), ("domain", "multi")))] for c in "01"}
    assert vcpus == {"0": 2, "1": 2}
    assert m[("libvirt_domain_numatune_info", (("domain", "multi"), ("mode", "strict"), ("nodeset", "0")))] == 1
    assert m[("libvirt_exporter_numa_readable", (("reason", ""),))] == 1
    # the shut-off domain has no placement series
    assert not [k for k in m if ("domain", "stopped") in k[1]]


def test_without_reader_host_cells_stay_and_health_says_why():
    m = _collect(_sample(), None, numatune=None)
    assert m[("libvirt_exporter_numa_readable", (("reason", "no_reader"),))] == 0
    assert ("libvirt_host_numa_cell_cpus", (("cell", "0"),)) in m
    assert not [k for k in m if k[0].startswith("libvirt_domain_")]


def test_placement_of_a_replaced_qemu_is_not_exported():
    reader = _reader()
    m = _collect(_sample(pid=5555), reader)
    assert not [k for k in m if k[0] in ("libvirt_domain_numa_memory_bytes", "libvirt_domain_numa_vcpus")]


def test_reader_topology_is_the_fallback_for_cell_cpus():
    m = _collect(_sample(with_topology=False), _reader())
    assert m[("libvirt_host_numa_cell_cpus", (("cell", "1"),))] == 8
    assert m[("libvirt_domain_numa_vcpus", (("cell", "1"), ("domain", "multi")))] == 2
