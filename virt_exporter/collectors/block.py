"""Block device counters and sizes (block group, with the backing chain).

Every layer of a disk's chain has its own allocation / capacity / physical; layers below the top carry
``backing_index`` (libvirt's index, the N of ``vda[N]`` that block-job commands take).
"""

from __future__ import annotations

from typing import Iterable, List, Optional, Tuple

from prometheus_client.metrics_core import Metric

from ..sample import DeviceStats, DomainStats, block_layers_with_top
from .base import ScrapeContext, register
from .families import NS_PER_S, counter, gauge, info

# (stats key, metric name, help, is counter, scale)
BLOCK_COUNTERS = (
    ("rd.bytes", "libvirt_domain_block_read_bytes_total", "Bytes read from the disk (block.N.rd.bytes).", 1),
    ("wr.bytes", "libvirt_domain_block_write_bytes_total", "Bytes written to the disk (block.N.wr.bytes).", 1),
    ("rd.reqs", "libvirt_domain_block_read_requests_total", "Read requests (block.N.rd.reqs).", 1),
    ("wr.reqs", "libvirt_domain_block_write_requests_total", "Write requests (block.N.wr.reqs).", 1),
    ("fl.reqs", "libvirt_domain_block_flush_requests_total", "Flush requests (block.N.fl.reqs).", 1),
    ("rd.times", "libvirt_domain_block_read_time_seconds_total",
     "Time spent on reads, seconds (block.N.rd.times).", NS_PER_S),
    ("wr.times", "libvirt_domain_block_write_time_seconds_total",
     "Time spent on writes, seconds (block.N.wr.times).", NS_PER_S),
    ("fl.times", "libvirt_domain_block_flush_time_seconds_total",
     "Time spent on flushes, seconds (block.N.fl.times).", NS_PER_S),
)
BLOCK_SIZES = (
    ("allocation", "libvirt_domain_block_allocation_bytes",
     "Highest written offset of the image, bytes (block.N.allocation: QEMU's runtime watermark, 0 when QEMU starts)."),
    ("capacity", "libvirt_domain_block_capacity_bytes", "Guest-visible size of the image, bytes (block.N.capacity)."),
    ("physical", "libvirt_domain_block_physical_bytes",
     "Size of the storage under the image (file size or block device size), bytes (block.N.physical)."),
)


def disk_layers(dom: DomainStats) -> List[Tuple[DeviceStats, Optional[str]]]:
    """Pair each block.N entry with its backing_index label: None for the top layer of a disk."""
    return [(dev, None if top else str(dev.get("backingIndex", "")))
            for dev, top in block_layers_with_top(dom.stats)]


@register("block", stats_groups=("block",),
          help="disk I/O counters and times, allocation / capacity / physical of every backing layer")
def collect(ctx: ScrapeContext) -> Iterable[Metric]:
    top = ["domain", "target"]
    layered = ["domain", "target", "backing_index"]
    block_info = info("libvirt_domain_block_info",
                      "Disk identity (value 1): source path, bus, image format, storage type, device kind.",
                      ["domain", "target", "path", "bus", "format", "storage_type", "device", "backing_index"])
    counters = [(key, counter(name, doc, top), scale) for key, name, doc, scale in BLOCK_COUNTERS]
    sizes = [(key, gauge(name, doc, layered)) for key, name, doc in BLOCK_SIZES]
    for uuid, dom in ctx.current.domains.items():
        if "block.count" not in dom.stats:
            continue
        meta = ctx.domain_info.get(uuid)
        disks = {d.target: d for d in meta.disks} if meta is not None else {}
        for dev, backing_index in disk_layers(dom):
            # The families zip label names with values: leaving backing_index off the list leaves the
            # label off the top layer's series.
            target = str(dev.get("name", ""))
            labels = (dom.name, target) if backing_index is None else (dom.name, target, backing_index)
            disk = disks.get(target)
            if backing_index is None:
                kind = (disk.bus, disk.driver_type, disk.source_type, disk.device) if disk else ("",) * 4
            else:
                # A backing layer: its own format and storage type from the XML's <backingStore>.
                layer = next((b for b in disk.backing if str(b.index) == backing_index), None) if disk else None
                kind = ("", layer.driver_type, layer.source_type, "") if layer else ("",) * 4
            block_info.add_metric(
                labels[:2] + (str(dev.get("path", "")), kind[0], kind[1] or "", kind[2] or "", kind[3])
                + labels[2:], {})
            if backing_index is None:
                for key, family, scale in counters:
                    value = dev.get(key)
                    if value is not None:
                        family.add_metric(labels, int(value) / scale)
            for key, family in sizes:
                value = dev.get(key)
                if value is not None:
                    family.add_metric(labels, value)
    yield block_info
    for _key, family, _scale in counters:
        yield family
    for _key, family in sizes:
        yield family
