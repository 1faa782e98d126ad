"""NUMA placement arithmetic: /proc/<pid>/numa_maps, vCPU thread stats, cpulists. Pure, no I/O.

numa_maps has one line per mapping: address, policy, then tokens such as ``file=…``, ``heap``,
``huge``, ``anon=N``, ``N<node>=<pages>`` and ``kernelpagesize_kB=<k>``. Pages are counted in the
mapping's own page size, so hugetlbfs mappings (2 MiB, 1 GiB) count in huge pages while transparent
huge pages in ordinary mappings count in base pages.
"""

from __future__ import annotations

import re
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

_NODE_TOKEN = re.compile(r"^N(\d+)=(\d+)$")
# QEMU names vCPU threads "CPU <n>/<accel>" (KVM, TCG …) when libvirt starts it with debug-threads=on.
_VCPU_COMM = re.compile(r"^CPU (\d+)/\S+$")


def numa_maps_bytes_by_node(text: str, default_page_kib: int = 4) -> Dict[int, int]:
    """Resident bytes per NUMA node of one process: Σ over mappings of N<node> pages × the mapping's
    page size (``kernelpagesize_kB``; ``default_page_kib`` for kernels that do not print it)."""
    by_node: Dict[int, int] = {}
    for line in text.splitlines():
        page_kib = default_page_kib
        pages: List[Tuple[int, int]] = []
        for token in line.split()[2:]:
            if token.startswith("kernelpagesize_kB="):
                page_kib = int(token.split("=", 1)[1])
                continue
            m = _NODE_TOKEN.match(token)
            if m:
                pages.append((int(m.group(1)), int(m.group(2))))
        for node, count in pages:
            by_node[node] = by_node.get(node, 0) + count * page_kib * 1024
    return by_node


def parse_task_stat_cpu(text: str) -> int:
    """Field 39 of /proc/<pid>/task/<tid>/stat: the CPU the thread last ran on.

    The second field (comm, in parentheses) may hold spaces and parentheses ("CPU 0/KVM"), so fields
    are counted from the last ')'. The first field after it is field 3.
    """
    rest = text[text.rindex(")") + 1:].split()
    return int(rest[39 - 3])


def vcpu_index(comm: str) -> Optional[int]:
    """The vCPU number of a QEMU thread named "CPU <n>/KVM", None for other threads."""
    m = _VCPU_COMM.match(comm.strip())
    return int(m.group(1)) if m else None


def parse_cpulist(text: str) -> List[int]:
    """A kernel cpulist ("0-3,8,10-11") as a sorted list of CPU ids."""
    cpus: List[int] = []
    for part in text.strip().split(","):
        if not part:
            continue
        lo, sep, hi = part.partition("-")
        if sep:
            cpus.extend(range(int(lo), int(hi) + 1))
        else:
            cpus.append(int(lo))
    return sorted(set(cpus))


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
