"""CPU MHz from two samples: per VM, host busy, hypervisor overhead (OpenStack Neat's data collector).

Pure functions, no I/O. Every rate is "no value" (None) rather than a wrong one when the two readings
cannot be compared: first sample, a domain new to this interval, a counter that went backwards
(domain or host restarted), an interval that is zero or negative.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, Iterable, Mapping, Optional

from ..sample import CpuTimes, Sample

NS_PER_S = 1e9


def capacity_mhz(cpus: int, core_mhz: float) -> float:
    """Host capacity: logical CPUs × core MHz (virNodeGetInfo's [2] × [3])."""
    return float(cpus * core_mhz)


def domain_cpu_mhz(prev_cpu_time_ns: Optional[int], cur_cpu_time_ns: Optional[int],
                   interval_s: float, core_mhz: float) -> Optional[float]:
    """A domain's average MHz over the interval: core_mhz × Δcpu.time_ns / (Δt_s × 1e9) (Neat's get_cpu_mhz).

    None for a domain without a previous reading, a cpu.time that went backwards (the domain restarted
    under the same UUID), or an interval that is not positive (clock trouble, same sample twice).
    """
    if prev_cpu_time_ns is None or cur_cpu_time_ns is None:
        return None
    if interval_s <= 0 or core_mhz <= 0:
        return None
    delta_ns = cur_cpu_time_ns - prev_cpu_time_ns
    if delta_ns < 0:
        return None
    return core_mhz * delta_ns / (interval_s * NS_PER_S)


def host_busy_mhz(prev: Optional[CpuTimes], cur: Optional[CpuTimes], capacity: float) -> Optional[float]:
    """Host busy MHz: capacity × Δbusy / Δtotal over the first seven /proc/stat columns (Neat's
    get_host_cpu_mhz), busy = user + nice + system.

    None without a previous reading, when no jiffy passed, or when a counter went backwards.
    """
    if prev is None or cur is None or capacity <= 0:
        return None
    delta_total = cur.total - prev.total
    delta_busy = cur.busy - prev.busy
    if delta_total <= 0 or delta_busy < 0:
        return None
    # busy is a part of total, so the share cannot exceed 1 unless the counters are inconsistent.
    return capacity * min(delta_busy, delta_total) / delta_total


def hypervisor_overhead_mhz(host_busy: Optional[float], vm_mhz: Iterable[Optional[float]]) -> Optional[float]:
    """max(0, host busy MHz − Σ VM MHz) (Neat's host_cpu_mhz_hypervisor).

    None when the host figure or any VM's figure is unknown: an unaccounted VM's CPU time would
    otherwise be reported as hypervisor overhead.
    """
    if host_busy is None:
        return None
    total_vm = 0.0
    for mhz in vm_mhz:
        if mhz is None:
            return None
        total_vm += mhz
    return max(0.0, host_busy - total_vm)


@dataclasses.dataclass(frozen=True)
class CpuUsage:
    """What the cpu_usage collector exports for one (previous, current) pair; None = not computable."""

    core_mhz: Optional[float]
    capacity_mhz: Optional[float]
    host_busy_mhz: Optional[float]
    hypervisor_overhead_mhz: Optional[float]
    # By UUID; only domains active in the current sample with a computable value.
    domain_mhz: Mapping[str, float]


def _cpu_time_ns(sample: Sample, uuid: str) -> Optional[int]:
    dom = sample.domains.get(uuid)
    if dom is None or not dom.active:
        return None
    value = dom.stats.get("cpu.time")
    return None if value is None else int(value)


def _qemu_pid(sample: Sample, uuid: str) -> Optional[int]:
    return sample.qemu_pids.get(uuid)


def cpu_usage(previous: Optional[Sample], current: Sample) -> CpuUsage:
    """Per-VM MHz, host busy MHz and hypervisor overhead between two samples.

    The interval is the difference of the samples' monotonic timestamps (taken before the libvirt
    call). A domain whose QEMU pid changed between the samples restarted even if its cpu.time grew,
    so it gets no value either.
    """
    node = current.node
    core = float(node.core_mhz) if node is not None else None
    capacity = capacity_mhz(node.cpus, node.core_mhz) if node is not None else None
    if previous is None or core is None or capacity is None:
        return CpuUsage(core, capacity, None, None, {})

    interval_s = current.monotonic_s - previous.monotonic_s
    busy = host_busy_mhz(previous.host_cpu.aggregate if previous.host_cpu else None,
                         current.host_cpu.aggregate if current.host_cpu else None, capacity)

    per_uuid: Dict[str, Optional[float]] = {}
    # Every domain that ran during the interval, including ones that stopped or vanished since: their
    # CPU time is inside the host's busy time, so without their value the overhead is unknown.
    running = {u for u, d in previous.domains.items() if d.active}
    running |= {u for u, d in current.domains.items() if d.active}
    running |= set(current.unresponsive)
    for uuid in running:
        prev_pid, cur_pid = _qemu_pid(previous, uuid), _qemu_pid(current, uuid)
        if prev_pid is not None and cur_pid is not None and prev_pid != cur_pid:
            per_uuid[uuid] = None
            continue
        per_uuid[uuid] = domain_cpu_mhz(_cpu_time_ns(previous, uuid), _cpu_time_ns(current, uuid),
                                        interval_s, core)

    overhead = hypervisor_overhead_mhz(busy, per_uuid.values())
    domain_mhz = {u: v for u, v in per_uuid.items()
                  if v is not None and u in current.domains and current.domains[u].active}
    return CpuUsage(core, capacity, busy, overhead, domain_mhz)
