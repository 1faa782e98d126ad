"""Domain memory from the balloon group: maximum, current, RSS, and the guest's own statistics when a
balloon driver in the guest reports them."""

from __future__ import annotations

from typing import Iterable

from prometheus_client.metrics_core import Metric

from .base import ScrapeContext, register
from .families import KIB, counter, gauge

# (balloon key, metric name, help, is counter, scale to base unit)
BALLOON_FIELDS = (
    ("maximum", "libvirt_domain_memory_maximum_bytes",
     "Maximum memory of the domain, bytes (balloon.maximum).", False, KIB),
    ("current", "libvirt_domain_memory_current_bytes",
     "Memory currently assigned by the balloon, bytes (balloon.current).", False, KIB),
    ("rss", "libvirt_domain_memory_rss_bytes",
     "Resident set size of the QEMU process, bytes (balloon.rss).", False, KIB),
    ("available", "libvirt_domain_memory_available_bytes",
     "Memory the guest sees as total, bytes (balloon.available; guest-reported).", False, KIB),
    ("usable", "libvirt_domain_memory_usable_bytes",
     "Memory the guest could use without swapping, bytes (balloon.usable; guest-reported).", False, KIB),
    ("unused", "libvirt_domain_memory_unused_bytes",
     "Memory unused by the guest, bytes (balloon.unused; guest-reported).", False, KIB),
    ("disk_caches", "libvirt_domain_memory_disk_caches_bytes",
     "Guest page cache reclaimable, bytes (balloon.disk_caches; guest-reported).", False, KIB),
    ("swap_in", "libvirt_domain_memory_swap_in_bytes_total",
     "Data swapped in by the guest, bytes (balloon.swap_in; guest-reported).", True, KIB),
    ("swap_out", "libvirt_domain_memory_swap_out_bytes_total",
     "Data swapped out by the guest, bytes (balloon.swap_out; guest-reported).", True, KIB),
    ("major_fault", "libvirt_domain_memory_major_faults_total",
     "Major page faults in the guest (balloon.major_fault; guest-reported).", True, 1),
    ("minor_fault", "libvirt_domain_memory_minor_faults_total",
     "Minor page faults in the guest (balloon.minor_fault; guest-reported).", True, 1),
    ("hugetlb_pgalloc", "libvirt_domain_memory_hugetlb_page_allocations_total",
     "Huge page allocations in the guest (balloon.hugetlb_pgalloc; guest-reported).", True, 1),
    ("hugetlb_pgfail", "libvirt_domain_memory_hugetlb_page_failures_total",
     "Failed huge page allocations in the guest (balloon.hugetlb_pgfail; guest-reported).", True, 1),
    ("last-update", "libvirt_domain_memory_stats_last_update_timestamp_seconds",
     "When the guest last reported its memory statistics, Unix time (balloon.last-update).", False, 1),
)


@register("memory", stats_groups=("balloon",), help="balloon: maximum, current, RSS and guest memory stats")
def collect(ctx: ScrapeContext) -> Iterable[Metric]:
    families = [(key, counter(name, doc) if is_counter else gauge(name, doc), scale)
                for key, name, doc, is_counter, scale in BALLOON_FIELDS]
    for dom in ctx.current.domains.values():
        s = dom.stats
        labels = (dom.name,)  # one tuple shared by every family's row
        for key, family, scale in families:
            value = s.get("balloon." + key)
            if value is not None:
                family.add_metric(labels, value * scale)
    for _key, family, _scale in families:
        yield family
