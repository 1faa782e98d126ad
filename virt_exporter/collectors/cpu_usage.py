"""Host and per-VM CPU in MHz (OpenStack Neat's data collector): core MHz, capacity, host busy,
hypervisor overhead, per-VM usage. Rates come from calc.mhz over (previous, current) samples."""

from __future__ import annotations

from typing import Iterable

from prometheus_client.metrics_core import Metric

from ..calc.mhz import cpu_usage
from .base import ScrapeContext, register
from .families import gauge


@register("cpu_usage", default_enabled=True, stats_groups=("state", "cpu-total"),
          help="Host and per-VM CPU MHz, hypervisor overhead (Neat's semantics)")
def collect(ctx: ScrapeContext) -> Iterable[Metric]:
    # Every domain, exported or not: the overhead is the host's busy CPU minus every VM's.
    usage = cpu_usage(*ctx.whole_pair())

    # virNodeGetInfo's mhz is the whole part of the last "cpu MHz" line of /proc/cpuinfo, read when
    # the exporter connects: a clock at that moment, not a rated one.
    core = gauge("libvirt_host_cpu_core_mhz",
                 "Core frequency in MHz as virNodeGetInfo gives it when the exporter connects to libvirt: the "
                 "\"cpu MHz\" of the last CPU in /proc/cpuinfo, whole MHz (under frequency scaling, that CPU's "
                 "clock at that moment).", labels=())
    capacity = gauge("libvirt_host_cpu_capacity_mhz",
                                 "Host CPU capacity in MHz: logical CPUs x core MHz.", labels=())
    if usage.core_mhz is not None and usage.capacity_mhz is not None:
        core.add_metric([], usage.core_mhz)
        capacity.add_metric([], usage.capacity_mhz)
    yield core
    yield capacity

    busy = gauge(
        "libvirt_host_cpu_usage_mhz",
        "Host busy CPU in MHz since the previous sample: capacity x delta(user+nice+system) / "
        "delta(first 7 columns) of /proc/stat. Absent on the first sample.", labels=())
    if usage.host_busy_mhz is not None:
        busy.add_metric([], usage.host_busy_mhz)
    yield busy

    overhead = gauge(
        "libvirt_host_hypervisor_overhead_mhz",
        "max(0, host busy MHz - sum of per-VM MHz) since the previous sample. Absent when any VM that "
        "ran in the interval has no value (new, restarted, stopped or unresponsive).", labels=())
    if usage.hypervisor_overhead_mhz is not None:
        overhead.add_metric([], usage.hypervisor_overhead_mhz)
    yield overhead

    per_vm = gauge(
        "libvirt_domain_cpu_usage_mhz",
        "Per-VM CPU in MHz since the previous sample: core MHz x delta(cpu.time) / delta(t). Absent for "
        "a domain's first sample and after it restarted.",
        labels=["domain"])
    exported = {u: mhz for u, mhz in usage.domain_mhz.items() if u in ctx.current.domains}
    for uuid, mhz in sorted(exported.items(), key=lambda kv: ctx.current.domains[kv[0]].name):
        per_vm.add_metric([ctx.current.domains[uuid].name], mhz)
    yield per_vm
