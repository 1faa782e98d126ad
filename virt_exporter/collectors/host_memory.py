"""Host memory from getMemoryStats(-1) (virNodeGetInfo's memory figure is not trusted), and
MemAvailable from /proc/meminfo, which libvirt does not report: free memory alone counts the page
cache as used, so a host that fills RAM with cache would look short of memory."""

from __future__ import annotations

from typing import Iterable

from prometheus_client.metrics_core import Metric

from .base import ScrapeContext, register
from .families import KIB, gauge


@register("host_memory", default_enabled=True,
          help="Host memory total and free from getMemoryStats(-1), available from /proc/meminfo")
def collect(ctx: ScrapeContext) -> Iterable[Metric]:
    total = gauge("libvirt_host_memory_bytes",
                              "Host memory in bytes (getMemoryStats(-1) total).", labels=())
    free = gauge("libvirt_host_memory_free_bytes",
                             "Free host memory in bytes (getMemoryStats(-1) free).", labels=())
    available = gauge("libvirt_host_memory_available_bytes",
                      "Host memory available without swapping, bytes (/proc/meminfo MemAvailable).", labels=())
    mem = ctx.current.host_memory
    if mem is not None:
        total.add_metric([], mem.total_kib * KIB)
        free.add_metric([], mem.free_kib * KIB)
    if ctx.current.host_memory_available_bytes is not None:
        available.add_metric([], ctx.current.host_memory_available_bytes)
    yield total
    yield free
    yield available
