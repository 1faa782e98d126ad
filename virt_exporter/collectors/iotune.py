"""Block I/O throttling limits per disk, from the <iotune> of the cached domain XML.

What ``virsh blkdeviotune`` sets on a running domain lands in its live XML (a tunable event
re-reads it). A limit libvirt leaves out of the XML (0, "no limit") gives no series.
"""

from __future__ import annotations

from typing import Iterable

from prometheus_client.metrics_core import Metric

from .base import ScrapeContext, register
from .families import gauge

_OPS = ("total", "read", "write")
# (<iotune> element suffix, family, help)
IOTUNE_FAMILIES = (
    ("_bytes_sec", "libvirt_domain_block_iotune_bytes_per_second",
     "Throughput limit of the disk, bytes per second (<iotune><op>_bytes_sec>; op total, read or write)."),
    ("_iops_sec", "libvirt_domain_block_iotune_requests_per_second",
     "Request rate limit of the disk, requests per second (<iotune><op>_iops_sec>)."),
    ("_bytes_sec_max", "libvirt_domain_block_iotune_burst_bytes_per_second",
     "Burst throughput limit of the disk, bytes per second (<iotune><op>_bytes_sec_max>)."),
    ("_iops_sec_max", "libvirt_domain_block_iotune_burst_requests_per_second",
     "Burst request rate limit of the disk, requests per second (<iotune><op>_iops_sec_max>)."),
)


@register("iotune", help="block I/O throttling limits per disk (<iotune> of the domain XML)")
def collect(ctx: ScrapeContext) -> Iterable[Metric]:
    labels = ["domain", "target", "op"]
    families = [gauge(name, doc, labels) for _suffix, name, doc in IOTUNE_FAMILIES]
    by_element = {op + suffix: (family, op) for (suffix, _n, _d), family in zip(IOTUNE_FAMILIES, families)
                  for op in _OPS}
    for uuid, dom in ctx.current.domains.items():
        meta = ctx.domain_info.get(uuid)
        if meta is None or not dom.active:
            continue
        for disk in meta.disks:
            for element, value in disk.iotune:
                hit = by_element.get(element)
                if hit is not None and value > 0:
                    hit[0].add_metric((dom.name, disk.target, hit[1]), value)
    yield from families
