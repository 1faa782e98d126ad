"""Host identity and size: libvirt/hypervisor versions, CPU model and count."""

from __future__ import annotations

from typing import Iterable

from prometheus_client.metrics_core import Metric

from .base import ScrapeContext, register
from .families import gauge, info


@register("host", help="host info (hostname, versions, CPU model) and logical CPU count")
def collect(ctx: ScrapeContext) -> Iterable[Metric]:
    host_info = ctx.current.extras.get("host_info") or {}
    fam = info("libvirt_host_info", "Host identity as libvirt reports it (value 1).",
               ["hostname", "libvirt_version", "hypervisor_version", "cpu_model"])
    if host_info:
        fam.add_metric([host_info["hostname"], host_info["libvirt_version"], host_info["hypervisor_version"],
                        host_info["cpu_model"]], {})
    cpus = gauge("libvirt_host_cpus", "Logical CPUs of the host (virNodeGetInfo).", [])
    node = ctx.current.node
    if node is not None:
        cpus.add_metric([], node.cpus)
    yield from (fam, cpus)
