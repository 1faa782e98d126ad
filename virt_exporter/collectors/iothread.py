"""IOThreads of each domain and their adaptive polling settings (iothread group).

Opt-in: the group costs one more QEMU monitor round trip per running domain in every bulk call.
libvirt numbers the keys by IOThread id (``iothread.<id>.poll-max-ns``), not 0..count-1.
"""

from __future__ import annotations

from typing import Dict, Iterable

from prometheus_client.metrics_core import Metric

from .base import ScrapeContext, register
from .families import NS_PER_S, gauge

_PREFIX = "iothread."


@register("iothread", default_enabled=False, stats_groups=("iothread",),
          help="IOThread count and adaptive polling settings (one more QEMU query per domain and scrape)")
def collect(ctx: ScrapeContext) -> Iterable[Metric]:
    labels = ["domain", "iothread"]
    count = gauge("libvirt_domain_iothreads", "IOThreads of the domain (iothread.count).")
    poll_max = gauge("libvirt_domain_iothread_poll_max_seconds",
                     "Longest time the IOThread polls before it sleeps, seconds; 0 = polling off "
                     "(iothread.<id>.poll-max-ns).", labels)
    grow = gauge("libvirt_domain_iothread_poll_grow",
                 "Factor the IOThread's poll time grows by; 0 = QEMU's default (iothread.<id>.poll-grow).", labels)
    shrink = gauge("libvirt_domain_iothread_poll_shrink",
                   "Divisor the IOThread's poll time shrinks by; 0 = QEMU's default (iothread.<id>.poll-shrink).",
                   labels)
    fields = {"poll-max-ns": (poll_max, NS_PER_S), "poll-grow": (grow, 1), "poll-shrink": (shrink, 1)}
    for dom in ctx.current.domains.values():
        s = dom.stats
        if "iothread.count" not in s:
            continue
        count.add_metric((dom.name,), s["iothread.count"])
        rows: Dict[str, Dict[str, float]] = {}
        for key, value in s.items():
            if not key.startswith(_PREFIX) or key == "iothread.count":
                continue
            ident, _, field = key[len(_PREFIX):].partition(".")
            if field in fields:
                rows.setdefault(ident, {})[field] = value
        for ident in sorted(rows, key=lambda i: (len(i), i)):
            for field, value in rows[ident].items():
                family, scale = fields[field]
                family.add_metric((dom.name, ident), value / scale)
    yield from (count, poll_max, grow, shrink)
