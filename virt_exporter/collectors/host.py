"""Host identity and size: libvirt/hypervisor versions, CPU model and count."""

from __future__ import annotations

from typing import Iterable

from prometheus_client.metrics_core import Metric

from .base import ScrapeContext, register
from .families import gauge, info


@register("host", without_libvirt=True, help="host info (hostname, versions, CPU model) and logical CPU count")
def collect(ctx: ScrapeContext) -> Iterable[Metric]:
    facts = ctx.current.host
    fam = info("libvirt_host_info", "Host identity: hostname and versions from libvirt, "
               "cpu_model as the host reports it (value 1).",
               ["hostname", "libvirt_version", "hypervisor_version", "cpu_model"])
    if facts is not None:
        fam.add_metric([facts.hostname, facts.libvirt_version, facts.hypervisor_version, facts.cpu_model], {})
    cpus = gauge("libvirt_host_cpus", "Logical CPUs of the host (virNodeGetInfo).", [])
    node = ctx.current.node
    if node is not None:
        cpus.add_metric([], node.cpus)
    yield from (fam, cpus)
