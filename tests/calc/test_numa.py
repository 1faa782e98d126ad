"""calc.numa: the host's cells, the placement of the QEMU running now, vCPU → cell and memory per cell."""

from __future__ import annotations

from virt_exporter.calc.numa import (
    cpu_to_cell,
    host_cell_cpus,
    live_placement,
    memory_per_cell,
    vcpu_cells,
    vcpus_per_cell,
)
from virt_exporter.sample import DomainPlacement, HostFacts, NumaSnapshot, Sample


def _facts(cell_cpus):
    return HostFacts(hostname="h", libvirt_version="9.0.0", hypervisor_version="7.2.0", cpu_model="x86_64",
                     cell_cpus=cell_cpus)


def _snapshot(pid):
    placement = DomainPlacement(uuid="u", name="vm", pid=pid, memory_bytes_by_node={0: 4096}, vcpu_cpus={0: 1},
                                read_monotonic_s=1.0, duration_s=0.01)
    return NumaSnapshot(domains={"u": placement}, node_cpus={0: [0, 1], 1: [2, 3]}, readable=True, reason="",
                        refresh_duration_s=0.01)


def test_host_cells_from_the_topology_else_from_the_kernel():
    assert host_cell_cpus(_facts({0: [0, 1, 2, 3]}), _snapshot(1)) == {0: [0, 1, 2, 3]}
    # no topology from libvirt (or no connection yet): the NUMA reader's /sys view
    assert host_cell_cpus(_facts({}), _snapshot(1)) == {0: [0, 1], 1: [2, 3]}
    assert host_cell_cpus(None, _snapshot(1)) == {0: [0, 1], 1: [2, 3]}
    assert host_cell_cpus(None, None) == {}


def test_a_placement_counts_only_while_its_qemu_runs():
    def sample(pids):
        return Sample(wall_time_s=1.0, monotonic_s=1.0, up=True, qemu_pids=pids)

    snap = _snapshot(4242)
    assert live_placement(snap, sample({"u": 4242}), "u") is snap.domains["u"]
    assert live_placement(snap, sample({"u": 5555}), "u") is None   # read from a QEMU since replaced
    assert live_placement(snap, sample({}), "u") is snap.domains["u"]  # pids not read: nothing says otherwise
    assert live_placement(snap, sample({"u": 4242}), "other") is None
    assert live_placement(None, sample({"u": 4242}), "u") is None


def test_vcpu_placement_three_vcpus_two_cells():
    cells = {0: [0, 1, 2, 3], 1: [4, 5, 6, 7]}
    vcpu_cpus = {0: 1, 1: 6, 2: 4}
    assert cpu_to_cell(cells)[6] == 1
    assert vcpu_cells(vcpu_cpus, cells) == {0: 0, 1: 1, 2: 1}
    assert vcpus_per_cell(vcpu_cpus, cells) == {0: 1, 1: 2}


def test_vcpus_per_cell_reports_empty_cells_and_skips_unknown_cpus():
    cells = {0: [0, 1], 1: [2, 3], 2: [4, 5]}
    # CPU 9 is in no cell (offline or a topology that changed): not counted anywhere
    assert vcpus_per_cell({0: 0, 1: 1, 2: 9}, cells) == {0: 2, 1: 0, 2: 0}


def test_memory_per_cell_zero_fills_and_keeps_unknown_nodes():
    assert memory_per_cell({1: 4096}, [0, 1]) == {0: 0, 1: 4096}
    # a node the topology did not list is kept, never dropped
    assert memory_per_cell({0: 1, 3: 2}, [0, 1]) == {0: 1, 1: 0, 3: 2}
