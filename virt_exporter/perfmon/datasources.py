"""Perfmon's data sources, computed from two Samples one step apart (pure functions, no I/O).

Names are XenServer's, so existing ``rrd_regex`` values keep working. Like perfmon's RRD rows, values
of counters are rates over the step:

VM:   ``cpuN``                fraction of one physical CPU used by vCPU N (Δvcpu.N.time ns / Δt)
      ``vif_N_rx|tx``         bytes/s of the N-th interface (libvirt's net.N index)
      ``vbd_<target>_read|write``  bytes/s of the disk with that target (vda, sdb, hdc …), top layer only
      ``memory``              bytes currently given to the guest (balloon.current)
      ``memory_internal_free``  KiB the guest reports unused (balloon.unused; only with a balloon driver)
Host: ``cpuN``                busy share of host CPU N from /proc/stat (user+nice+system over all columns)
      ``pif_<ifname>_rx|tx``  bytes/s of every /proc/net/dev interface
      ``memory_free_kib``, ``memory_total_kib``  getMemoryStats(-1)

A counter that went backwards (domain or host restarted) or appeared only now has no value this step:
its name is reported as *unavailable*, and a variable matching it reads it as 0.0, as perfmon does
(engine.py's consolidation; the name still counts, so ``average`` divides by it).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, FrozenSet, Mapping, Optional, Set

from ..sample import DeviceStats, DomainStats, Sample, block_layers_with_top, indexed_devices


@dataclasses.dataclass(frozen=True)
class DataSources:
    """One object's data-source values for one step, and the names that exist without a value."""

    values: Mapping[str, float]
    unavailable: FrozenSet[str] = frozenset()

    @property
    def names(self) -> FrozenSet[str]:
        return frozenset(self.values) | self.unavailable


def step_interval_s(previous: Sample, current: Sample) -> float:
    """Seconds between the two samples' pre-call timestamps (monotonic clock)."""
    return current.monotonic_s - previous.monotonic_s


def _rate(values: Dict[str, float], unavailable: Set[str], name: str,
          prev: Optional[Any], cur: Optional[Any], interval_s: float, units_per_s: float = 1.0) -> None:
    if cur is None:
        return
    if prev is None or interval_s <= 0:
        unavailable.add(name)
        return
    delta = float(cur) - float(prev)
    if delta < 0:
        unavailable.add(name)
        return
    values[name] = delta / (interval_s * units_per_s)


def _top_layers(stats: Mapping[str, Any]) -> Dict[str, DeviceStats]:
    """Each disk's guest-visible layer by target (sample.block_layers_with_top)."""
    return {str(dev["name"]): dev for dev, top in block_layers_with_top(stats) if top}


def vm_datasources(previous: Optional[DomainStats], current: DomainStats, interval_s: float) -> DataSources:
    """A domain's perfmon data sources over a step of ``interval_s`` seconds.

    ``previous`` is the same domain (same UUID) in the sample one step earlier, or None when it was
    not there (then only gauges have values).
    """
    values: Dict[str, float] = {}
    unavailable: Set[str] = set()
    cur_stats = current.stats
    prev_stats: Mapping[str, Any] = previous.stats if previous is not None else {}

    prev_vcpus = {d["index"]: d for d in indexed_devices(prev_stats, "vcpu")}
    for dev in indexed_devices(cur_stats, "vcpu"):
        p = prev_vcpus.get(dev["index"], {})
        # ns of vCPU time per ns of wall time = share of one physical CPU
        _rate(values, unavailable, "cpu%d" % int(dev["index"]), p.get("time"), dev.get("time"), interval_s, 1e9)

    prev_nets = {d["index"]: d for d in indexed_devices(prev_stats, "net")}
    for dev in indexed_devices(cur_stats, "net"):
        p = prev_nets.get(dev["index"], {})
        if p.get("name") != dev.get("name"):
            p = {}  # another interface now holds this index (hot-unplug + plug): no rate this step
        for key, suffix in (("rx.bytes", "rx"), ("tx.bytes", "tx")):
            _rate(values, unavailable, "vif_%d_%s" % (int(dev["index"]), suffix), p.get(key), dev.get(key), interval_s)

    prev_disks = _top_layers(prev_stats)
    for target, dev in _top_layers(cur_stats).items():
        p = prev_disks.get(target, {})
        for key, suffix in (("rd.bytes", "read"), ("wr.bytes", "write")):
            _rate(values, unavailable, "vbd_%s_%s" % (target, suffix), p.get(key), dev.get(key), interval_s)

    if "balloon.current" in cur_stats:
        values["memory"] = float(cur_stats["balloon.current"]) * 1024.0
    if "balloon.unused" in cur_stats:
        values["memory_internal_free"] = float(cur_stats["balloon.unused"])
    return DataSources(values, frozenset(unavailable))


def host_datasources(previous: Optional[Sample], current: Sample, interval_s: float) -> DataSources:
    """The host's perfmon data sources over a step; CPU and interfaces need ``previous``.

    Reads ``current.host_cpu`` (per-CPU /proc/stat), ``current.host_memory`` and
    ``current.net_dev`` ({ifname: NetDevCounters}).
    """
    values: Dict[str, float] = {}
    unavailable: Set[str] = set()

    if current.host_cpu is not None:
        prev_cpus = previous.host_cpu.per_cpu if previous is not None and previous.host_cpu is not None else {}
        for cpu, times in current.host_cpu.per_cpu.items():
            name = "cpu%d" % cpu
            p = prev_cpus.get(cpu)
            if p is None:
                unavailable.add(name)
                continue
            d_total = times.total - p.total
            d_busy = times.busy - p.busy
            if d_total <= 0 or d_busy < 0 or d_busy > d_total:
                unavailable.add(name)  # no tick passed, or the counters were reset (CPU offlined)
                continue
            values[name] = d_busy / d_total

    net_dev = current.net_dev
    if net_dev:
        prev_net = previous.net_dev if previous is not None else {}
        for ifname, counters in net_dev.items():
            before = prev_net.get(ifname)
            _rate(values, unavailable, "pif_%s_rx" % ifname, before.rx_bytes if before else None,
                  counters.rx_bytes, interval_s)
            _rate(values, unavailable, "pif_%s_tx" % ifname, before.tx_bytes if before else None,
                  counters.tx_bytes, interval_s)

    if current.host_memory is not None:
        values["memory_free_kib"] = float(current.host_memory.free_kib)
        values["memory_total_kib"] = float(current.host_memory.total_kib)
    return DataSources(values, frozenset(unavailable))
