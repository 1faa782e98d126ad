"""Domain CPU time and halt-polling counters (cpu-total group)."""

from __future__ import annotations

from typing import Iterable

from prometheus_client.metrics_core import Metric

from .base import ScrapeContext, register
from .families import NS_PER_S, counter

# (stats key, family, help): halt polling, reported by libvirt >= 8.0 when the host's KVM exposes it
# (cpu.haltpoll.*, summed over the vCPUs); absent keys give no series.
HALTPOLL = (
    ("cpu.haltpoll.success.time", "libvirt_domain_cpu_haltpoll_success_seconds_total",
     "Time the vCPUs spent halt-polling that ended with a wake-up in the poll window, seconds "
     "(cpu.haltpoll.success.time)."),
    ("cpu.haltpoll.fail.time", "libvirt_domain_cpu_haltpoll_fail_seconds_total",
     "Time the vCPUs spent halt-polling that ended with the vCPU scheduled out, seconds "
     "(cpu.haltpoll.fail.time)."),
)


@register("cpu", stats_groups=("cpu-total",),
          help="domain CPU time (cpu.time, cpu.user, cpu.system) and halt-polling time")
def collect(ctx: ScrapeContext) -> Iterable[Metric]:
    total = counter("libvirt_domain_cpu_seconds_total",
                    "CPU time used by the domain's QEMU process, seconds (cpu.time).")
    user = counter("libvirt_domain_cpu_user_seconds_total", "User CPU time of the domain, seconds (cpu.user).")
    system = counter("libvirt_domain_cpu_system_seconds_total",
                     "System CPU time of the domain, seconds (cpu.system).")
    haltpoll = [(key, counter(name, doc)) for key, name, doc in HALTPOLL]
    for dom in ctx.current.domains.values():
        s = dom.stats
        labels = (dom.name,)  # one tuple shared by every family's row
        if "cpu.time" in s:
            total.add_metric(labels, s["cpu.time"] / NS_PER_S)
        if "cpu.user" in s:
            user.add_metric(labels, s["cpu.user"] / NS_PER_S)
        if "cpu.system" in s:
            system.add_metric(labels, s["cpu.system"] / NS_PER_S)
        for key, family in haltpoll:
            if key in s:
                family.add_metric(labels, s[key] / NS_PER_S)
    yield from (total, user, system)
    for _key, family in haltpoll:
        yield family
