"""The one Sample builder of the unit tests: ``sample`` for any sample, ``cpu_sample`` for a host whose
CPU accounting the test sets, ``domain`` and ``named`` for its domains."""

from __future__ import annotations

from typing import Any, Iterable, List, Mapping, Optional

from virt_exporter.sample import CpuTimes, DomainStats, HostCpu, NodeInfo, Sample

NODE = NodeInfo(cpus=2, core_mhz=2000, model="x86_64")


def domain(uuid: str, cpu_ns: Optional[int] = None, state: int = 1, name: Optional[str] = None,
           **stats: Any) -> DomainStats:
    """A domain (running unless ``state`` says otherwise) with a cpu.time when given; ``name``
    defaults to "vm-<uuid>"."""
    values: dict = {"state.state": state, **stats}
    if cpu_ns is not None:
        values["cpu.time"] = cpu_ns
    return DomainStats(uuid=uuid, name=name or "vm-" + uuid, stats=values)


def named(uuid_prefix: str = "", **cpu_ns: int) -> List[DomainStats]:
    """Running domains by name with their cpu.time: ``named(web1=0, db=5)``; UUID = prefix + name."""
    return [domain(uuid_prefix + name, ns, name=name) for name, ns in cpu_ns.items()]


def sample(t_s: float = 0.0, domains: Iterable[DomainStats] = (), up: bool = True, **fields: Any) -> Sample:
    """A sample at monotonic time ``t_s`` (its wall time too, unless ``wall_time_s`` is given) with
    these domains; any other Sample field as given."""
    return Sample(wall_time_s=fields.pop("wall_time_s", t_s), monotonic_s=t_s, up=up,
                  domains={d.uuid: d for d in domains}, **fields)


def cpu_sample(t_s: float, domains: Iterable[DomainStats] = (), busy: int = 0, total: int = 0,
               pids: Optional[Mapping[str, int]] = None, unresponsive: Iterable[str] = (),
               node: Optional[NodeInfo] = NODE) -> Sample:
    """A good sample at monotonic time ``t_s`` whose host /proc/stat shows ``busy`` of ``total``
    jiffies (busy in the system column, where guest time lands on the test bed; the rest idle)."""
    return sample(t_s, domains, wall_time_s=1e9 + t_s, node=node,
                  host_cpu=HostCpu(CpuTimes(0, 0, busy, total - busy, 0, 0, 0), {}),
                  qemu_pids=pids or {}, unresponsive=frozenset(unresponsive))
