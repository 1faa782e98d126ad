"""One scrape: take (or share) a sample, run every enabled collector on it, add the exporter's health.

A collector that raises is reported as ``libvirt_exporter_collector_success 0`` and logged; the scrape
goes on (node_exporter's habit). Nothing here raises into the HTTP layer.
"""

from __future__ import annotations

import dataclasses
import logging
import platform
import time
from typing import Any, Dict, Iterable, List, Mapping, Optional, Protocol, Sequence, Tuple

import libvirt
import prometheus_client
from prometheus_client.metrics_core import Metric

from . import __version__, statuspage
from .collectors import base
from .collectors.families import counter, gauge, info
from .domain_filter import NO_FILTER, DomainFilter
from .sample import Sample
from .sampler import SamplePair
from .snapshot import Snapshot

log = logging.getLogger(__name__)


class SnapshotSource(Protocol):
    """The sampler as the exporter sees it: one published snapshot per request."""

    def snapshot(self, timeout_s: Optional[float] = None) -> Snapshot: ...


class Exporter:
    """Builds the metric families of one scrape. ``scrape(timeout_s)`` returns an object with
    ``collect()`` that client_python's encoders accept in place of a registry."""

    def __init__(self, sampler: SnapshotSource, collectors: Sequence[base.CollectorSpec],
                 options: Mapping[str, Mapping[str, object]], static_registry: Optional[Any] = None,
                 domain_filter: DomainFilter = NO_FILTER) -> None:
        self.sampler = sampler
        self.domain_filter = domain_filter
        self.collectors = list(collectors)
        self.options = options
        self.static_registry = static_registry  # process collector and other always-there metrics
        self.collector_errors_total: Dict[str, int] = {c.name: 0 for c in self.collectors}
        self._build_labels = [__version__, platform.python_version(), _libvirt_python_version(),
                              _prometheus_client_version()]

    def scrape(self, timeout_s: Optional[float] = None) -> "Scrape":
        return Scrape(self, timeout_s)

    def status(self, timeout_s: Optional[float] = None) -> statuspage.StatusView:
        """The status page's data: the sample a scrape would get now (shared or reused through the
        single-flight sampler, never a libvirt call of the page's own), with the exporter's health."""
        snap = self.sampler.snapshot(timeout_s)
        ctx = scrape_context(snap, self.domain_filter)
        current = ctx.current
        health = statuspage.Health(sample_age_s=sample_age_s(current), bulk_stats_s=current.bulk_duration_s,
                                   unresponsive=len(current.unresponsive),
                                   collector_errors=dict(self.collector_errors_total),
                                   reconnects=snap.connection.reconnects_total)
        return statuspage.build_view(ctx, self.options, health)

    def families(self, snap: Snapshot) -> List[Metric]:
        scrape_ctx = scrape_context(snap, self.domain_filter)
        current = scrape_ctx.current
        out: List[Metric] = []
        timings: List[Tuple[str, float, bool]] = []
        for spec in self.collectors:
            started = time.perf_counter()
            ok = False
            if current.up or spec.without_libvirt:
                ctx = dataclasses.replace(scrape_ctx, options=self.options.get(spec.name, {}))
                try:
                    out.extend(spec.collect(ctx))
                    ok = True
                except Exception:
                    self.collector_errors_total[spec.name] += 1
                    log.exception("collector %s failed", spec.name)
            timings.append((spec.name, time.perf_counter() - started, ok))
        out[:0] = health_families(current, timings, snap.connection.reconnects_total,
                                  self.collector_errors_total, self._build_labels)
        if self.static_registry is not None:
            out.extend(self.static_registry.collect())
        return out


def scrape_context(snap: Snapshot, domain_filter: DomainFilter = NO_FILTER) -> base.ScrapeContext:
    """The collectors' context of one snapshot (no collector's options yet). With a domain filter,
    ``current`` and ``previous`` hold the exported domains and ``unfiltered`` the whole pair."""
    previous, current = snap.previous, snap.current
    unfiltered: Optional[SamplePair] = None
    keeps_domain = base.keeps_every_domain
    if domain_filter.active:
        unfiltered, keeps_domain = (previous, current), domain_filter.keeps
        previous, current = domain_filter.apply(previous), domain_filter.apply_to(current)
    background = snap.background
    return base.ScrapeContext(current=current, previous=previous, domain_info=snap.domain_info,
                              numa=background.numa, block_events=background.block_events,
                              perfmon=background.perfmon, guest_agent=background.guest_agent,
                              jobs=background.jobs, unfiltered=unfiltered, keeps_domain=keeps_domain)


def sample_age_s(current: Sample) -> float:
    """How long ago the sample was stamped (0 for one never taken)."""
    return max(0.0, time.monotonic() - current.monotonic_s) if current.monotonic_s else 0.0


def health_families(current: Sample, timings: Sequence[Tuple[str, float, bool]] = (), reconnects_total: int = 0,
                    collector_errors: Optional[Mapping[str, int]] = None,
                    build_labels: Optional[Sequence[str]] = None) -> List[Metric]:
    """libvirt_up and the exporter's own health families for one scrape."""
    up = gauge("libvirt_up", "1 when this scrape's libvirt calls succeeded, 0 otherwise.", [])
    up.add_metric([], 1 if current.up else 0)
    durations = gauge("libvirt_exporter_collector_duration_seconds",
                      "Time each collector took to build its metrics in this scrape, seconds.", ["collector"])
    success = gauge("libvirt_exporter_collector_success",
                    "1 when the collector succeeded in this scrape, 0 when it failed or had no libvirt data.",
                    ["collector"])
    for name, seconds, ok in timings:
        durations.add_metric([name], seconds)
        success.add_metric([name], 1 if ok else 0)
    build = info("libvirt_exporter_build_info", "Versions of the exporter and what it runs on (value 1).",
                 ["version", "python_version", "libvirt_python_version", "prometheus_client_version"])
    if build_labels:
        build.add_metric(list(build_labels), {})
    bulk = gauge("libvirt_exporter_bulk_stats_duration_seconds",
                 "Wall time of the bare libvirt bulk stats call(s) behind this scrape's sample, seconds.", [])
    bulk.add_metric([], current.bulk_duration_s)
    age = gauge("libvirt_exporter_sample_age_seconds",
                "Age of the sample this scrape served (0 when taken for it; >0 when shared or reused).", [])
    age.add_metric([], sample_age_s(current))
    unresponsive = gauge("libvirt_exporter_domain_unresponsive",
                         "1 for each domain left out of or incomplete in this scrape because it did not answer.")
    for uuid in sorted(current.unresponsive):
        dom = current.domains.get(uuid)
        unresponsive.add_metric([dom.name if dom is not None else uuid], 1)
    reconnects = counter("libvirt_exporter_libvirt_reconnects_total",
                         "Times the exporter reconnected to libvirtd after losing the connection.", [])
    reconnects.add_metric([], reconnects_total)
    errors = counter("libvirt_exporter_collector_errors_total",
                     "Scrapes in which the collector raised an error.", ["collector"])
    for name, n in sorted((collector_errors or {}).items()):
        errors.add_metric([name], n)
    return [up, durations, success, build, bulk, age, unresponsive, reconnects, errors]


class Scrape:
    """Adapter: client_python's generate_latest() wants an object with collect()."""

    def __init__(self, exporter: Exporter, timeout_s: Optional[float]) -> None:
        self.exporter = exporter
        self.timeout_s = timeout_s
        self._snapshot: Optional[Snapshot] = None

    def prefetch(self) -> None:
        """Take (or wait for, or reuse) the sample; the libvirt part of the scrape."""
        if self._snapshot is None:
            self._snapshot = self.exporter.sampler.snapshot(self.timeout_s)

    def collect(self) -> Iterable[Metric]:
        self.prefetch()
        assert self._snapshot is not None
        return self.exporter.families(self._snapshot)


def _libvirt_python_version() -> str:
    try:
        from importlib.metadata import version

        return version("libvirt-python")
    except Exception:
        return str(libvirt.getVersion())


def _prometheus_client_version() -> str:
    try:
        from importlib.metadata import version

        return version("prometheus-client")
    except Exception:
        return getattr(prometheus_client, "__version__", "")
