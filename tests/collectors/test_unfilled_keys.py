"""The stats keys the test bed's guests cannot fill, checked on a sample where every key has a value
of its own: a guest without an OS has no balloon driver (so no guest-reported balloon keys, and
balloon.current always equals balloon.maximum) and issues no flush. tests/integration/test_core_stats.py
checks every key the bed fills against virsh; this test checks the rest the same way, with the
key → metric → unit table written out from libvirt's documentation of virConnectGetAllDomainStats,
not taken from the collectors. A swapped pair or a unit slip gives another number here."""

from __future__ import annotations

from typing import Dict, Tuple

import pytest

from samples import domain, sample
from virt_exporter.collectors import block, memory
from virt_exporter.collectors.base import ScrapeContext

KIB = 1024      # "(in KiB)"
NS = 1e9        # "(in nanoseconds)" / "total time (ns)"

# balloon.<key>: libvirt's unit → the metric (× KIB, or as is for counts and the timestamp).
BALLOON: Tuple[Tuple[str, str, float], ...] = (
    ("current", "libvirt_domain_memory_current_bytes", KIB),
    ("maximum", "libvirt_domain_memory_maximum_bytes", KIB),
    ("rss", "libvirt_domain_memory_rss_bytes", KIB),
    ("available", "libvirt_domain_memory_available_bytes", KIB),
    ("usable", "libvirt_domain_memory_usable_bytes", KIB),
    ("unused", "libvirt_domain_memory_unused_bytes", KIB),
    ("disk_caches", "libvirt_domain_memory_disk_caches_bytes", KIB),
    ("swap_in", "libvirt_domain_memory_swap_in_bytes_total", KIB),
    ("swap_out", "libvirt_domain_memory_swap_out_bytes_total", KIB),
    ("major_fault", "libvirt_domain_memory_major_faults_total", 1),
    ("minor_fault", "libvirt_domain_memory_minor_faults_total", 1),
    ("hugetlb_pgalloc", "libvirt_domain_memory_hugetlb_page_allocations_total", 1),
    ("hugetlb_pgfail", "libvirt_domain_memory_hugetlb_page_failures_total", 1),
    ("last-update", "libvirt_domain_memory_stats_last_update_timestamp_seconds", 1),
)
# block.0.<key> of the top layer: bytes and requests as they are, times ÷ NS.
BLOCK: Tuple[Tuple[str, str, float], ...] = (
    ("rd.bytes", "libvirt_domain_block_read_bytes_total", 1),
    ("wr.bytes", "libvirt_domain_block_write_bytes_total", 1),
    ("rd.reqs", "libvirt_domain_block_read_requests_total", 1),
    ("wr.reqs", "libvirt_domain_block_write_requests_total", 1),
    ("fl.reqs", "libvirt_domain_block_flush_requests_total", 1),
    ("rd.times", "libvirt_domain_block_read_time_seconds_total", 1 / NS),
    ("wr.times", "libvirt_domain_block_write_time_seconds_total", 1 / NS),
    ("fl.times", "libvirt_domain_block_flush_time_seconds_total", 1 / NS),
)


NAMES = {name for _k, name, _s in BALLOON + BLOCK}


def _printed(collect, stats: Dict[str, object]) -> Dict[str, float]:
    """metric name → value for the one domain (top layer only for block)."""
    ctx = ScrapeContext(current=sample(1.0, [domain("u1", name="vm", **stats)]), previous=None, domain_info={})
    out: Dict[str, float] = {}
    for family in collect(ctx):
        for s in family.samples:
            if s.labels.get("domain") == "vm" and not s.labels.get("backing_index") and s.name in NAMES:
                out[s.name] = s.value
    return out


@pytest.mark.parametrize("prefix, table, collect", [
    ("balloon.", BALLOON, memory.collect),
    ("block.0.", BLOCK, block.collect),
], ids=["balloon", "block"])
def test_every_key_lands_on_its_metric_in_its_unit(prefix, table, collect):
    # Values of their own (distinct primes times a round number): no two keys give the same series.
    primes = [1009, 1013, 1019, 1021, 1031, 1033, 1039, 1049, 1051, 1061, 1063, 1069, 1087, 1091]
    stats: Dict[str, object] = {prefix + key: primes[i] * 1000 for i, (key, _n, _s) in enumerate(table)}
    if prefix.startswith("block"):
        stats.update({"block.count": 1, "block.0.name": "vda", "block.0.path": "/x.qcow2"})
    got = _printed(collect, stats)
    want = {name: primes[i] * 1000 * scale for i, (_key, name, scale) in enumerate(table)}
    assert got == pytest.approx(want)
