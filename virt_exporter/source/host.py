"""Host readings from /proc (and statvfs): CPU accounting, network devices, memory.

Every reader takes ``root`` so tests can point it at a fixture tree (a multi-cell host, a host without
permissions) instead of the real /proc and /sys.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Dict

from ..sample import CpuTimes, HostCpu


def _path(root: str, *parts: str) -> str:
    return os.path.join(root, *parts)


def parse_proc_stat(text: str) -> HostCpu:
    """The aggregate ``cpu`` line and the ``cpuN`` lines of /proc/stat, first seven columns each."""
    aggregate = None
    per_cpu: Dict[int, CpuTimes] = {}
    for line in text.splitlines():
        if not line.startswith("cpu"):
            # The cpu lines come first; stop at the first other line.
            if aggregate is not None:
                break
            continue
        fields = line.split()
        columns = [int(v) for v in fields[1:8]]
        columns += [0] * (7 - len(columns))  # very old kernels have fewer columns
        times = CpuTimes(*columns)
        label = fields[0]
        if label == "cpu":
            aggregate = times
        else:
            per_cpu[int(label[3:])] = times
    if aggregate is None:
        raise ValueError("no aggregate cpu line in /proc/stat")
    return HostCpu(aggregate, per_cpu)


def read_proc_stat(root: str = "/") -> HostCpu:
    with open(_path(root, "proc/stat"), "rb") as f:
        return parse_proc_stat(f.read().decode("ascii", "replace"))


@dataclasses.dataclass(frozen=True)
class NetDevCounters:
    """Byte and packet counters of one /proc/net/dev line."""

    rx_bytes: int
    rx_packets: int
    tx_bytes: int
    tx_packets: int


def parse_net_dev(text: str) -> Dict[str, NetDevCounters]:
    devices: Dict[str, NetDevCounters] = {}
    for line in text.splitlines()[2:]:  # two header lines
        name, sep, rest = line.partition(":")
        if not sep:
            continue
        fields = rest.split()
        if len(fields) < 10:
            continue
        devices[name.strip()] = NetDevCounters(
            rx_bytes=int(fields[0]), rx_packets=int(fields[1]),
            tx_bytes=int(fields[8]), tx_packets=int(fields[9]))
    return devices


def read_net_dev(root: str = "/") -> Dict[str, NetDevCounters]:
    with open(_path(root, "proc/net/dev"), "rb") as f:
        return parse_net_dev(f.read().decode("ascii", "replace"))


def parse_meminfo(text: str) -> Dict[str, int]:
    """/proc/meminfo as {field: KiB} (fields without a unit, like HugePages_Total, are counts)."""
    values: Dict[str, int] = {}
    for line in text.splitlines():
        key, sep, rest = line.partition(":")
        if sep and rest.split():
            values[key] = int(rest.split()[0])
    return values


def read_meminfo(root: str = "/") -> Dict[str, int]:
    with open(_path(root, "proc/meminfo"), "rb") as f:
        return parse_meminfo(f.read().decode("ascii", "replace"))


def fs_used_fraction(path: str) -> float:
    """Used share (0..1) of the filesystem holding ``path``, as df computes it (used / (used + avail))."""
    st = os.statvfs(path)
    used = (st.f_blocks - st.f_bfree) * st.f_frsize
    avail = st.f_bavail * st.f_frsize
    if used + avail <= 0:
        return 0.0
    return used / (used + avail)
