"""NUMA placement arithmetic: which host cell holds a VM's memory and runs its vCPUs. Pure, no I/O
(the /proc parsers live with their reader, source/numa.py)."""

from __future__ import annotations

from typing import Dict, Iterable, List, Mapping, Optional, Sequence

from ..sample import DomainPlacement, HostFacts, NumaSnapshot, Sample


def host_cell_cpus(host: Optional[HostFacts], numa: Optional[NumaSnapshot]) -> Mapping[int, List[int]]:
    """{cell: [CPUs]} of the host: libvirt's capabilities topology first, the kernel's /sys view (the
    NUMA reader's) when the sample has none; {} when neither knows."""
    if host is not None and host.cell_cpus:
        return host.cell_cpus
    return numa.node_cpus if numa is not None else {}


def live_placement(numa: Optional[NumaSnapshot], current: Sample, uuid: str) -> Optional[DomainPlacement]:
    """The domain's last placement reading, unless it was read from a QEMU that has since been
    replaced (the sample knows another pid for the domain); None without one."""
    placement = numa.domains.get(uuid) if numa is not None else None
    if placement is None:
        return None
    if uuid in current.qemu_pids and placement.pid != current.qemu_pids[uuid]:
        return None
    return placement


def cpu_to_cell(cell_cpus: Mapping[int, Iterable[int]]) -> Dict[int, int]:
    """Invert {cell: [cpus]} into {cpu: cell}."""
    return {cpu: cell for cell, cpus in cell_cpus.items() for cpu in cpus}


def vcpu_cells(vcpu_cpus: Mapping[int, int], cell_cpus: Mapping[int, Iterable[int]]) -> Dict[int, int]:
    """{vcpu: host cell} from {vcpu: CPU it last ran on}; vCPUs on a CPU no cell lists are left out."""
    owner = cpu_to_cell(cell_cpus)
    return {vcpu: owner[cpu] for vcpu, cpu in vcpu_cpus.items() if cpu in owner}


def vcpus_per_cell(vcpu_cpus: Mapping[int, int], cell_cpus: Mapping[int, Iterable[int]]) -> Dict[int, int]:
    """Number of vCPUs whose thread last ran on a CPU of each cell, with 0 for cells none ran on."""
    counts = {cell: 0 for cell in cell_cpus}
    for cell in vcpu_cells(vcpu_cpus, cell_cpus).values():
        counts[cell] += 1
    return counts


def memory_per_cell(bytes_by_node: Mapping[int, int], cells: Sequence[int]) -> Dict[int, int]:
    """Bytes per host cell with 0 for cells holding none, plus any node numa_maps named that the
    topology did not (never drop memory the kernel says is there)."""
    result = {cell: 0 for cell in cells}
    for node, size in bytes_by_node.items():
        result[node] = result.get(node, 0) + size
    return result
