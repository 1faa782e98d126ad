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
from .sampler import SamplePair, Sampler

log = logging.getLogger(__name__)


class Snapshots(Protocol):
    def snapshot(self) -> Any: ...


@dataclasses.dataclass
class Subsystems:
    """What reads in the background, beside the sampler; each gives the collectors a snapshot."""

    numa_reader: Optional[Snapshots] = None
    block_events: Optional[Snapshots] = None
    perfmon: Optional[Snapshots] = None
    guest_agent: Optional[Snapshots] = None
    jobs: Optional[Snapshots] = None

    def snapshots(self) -> Dict[str, Any]:
        return {name: None if subsystem is None else subsystem.snapshot()
                for name, subsystem in (("numa", self.numa_reader), ("block_events", self.block_events),
                                        ("perfmon", self.perfmon), ("guest_agent", self.guest_agent),
                                        ("jobs", self.jobs))}


class Exporter:
    """Builds the metric families of one scrape. ``scrape(timeout_s)`` returns an object with
    ``collect()`` that client_python's encoders accept in place of a registry."""

    def __init__(self, sampler: Sampler, collectors: Sequence[base.CollectorSpec],
                 options: Mapping[str, Mapping[str, Any]], subsystems: Optional[Subsystems] = None,
                 static_registry: Optional[Any] = None, domain_filter: DomainFilter = NO_FILTER) -> None:
        self.sampler = sampler
        self.domain_filter = domain_filter
        self.collectors = list(collectors)
        self.options = options
        self.subsystems = subsystems or Subsystems()
        self.static_registry = static_registry  # process collector and other always-there metrics
        self.collector_errors_total: Dict[str, int] = {c.name: 0 for c in self.collectors}
        self._build_labels = [__version__, platform.python_version(), _libvirt_python_version(),
                              _prometheus_client_version()]

    def scrape(self, timeout_s: Optional[float] = None) -> "Scrape":
        return Scrape(self, timeout_s)

    def _context_base(self, pair: SamplePair) -> Dict[str, Any]:
        """What every collector's context (and the status page's) holds: the pair with only the
        exported domains, the whole pair, the domain XML, the background snapshots."""
        previous, current = pair
        ctx_base: Dict[str, Any] = dict(domain_info=self.sampler.xml_cache.snapshot(),
                                        **self.subsystems.snapshots())
        if self.domain_filter.active:
            ctx_base.update(unfiltered=(previous, current), keeps_domain=self.domain_filter.keeps)
            previous, current = self.domain_filter.apply(previous), self.domain_filter.apply_to(current)
        ctx_base.update(current=current, previous=previous)
        return ctx_base

    def status(self, timeout_s: Optional[float] = None) -> Dict[str, Any]:
        """The status page's data: the sample a scrape would get now (shared or reused through the
        single-flight sampler, never a libvirt call of the page's own), with the exporter's health."""
        pair = self.sampler.get(timeout_s)
        ctx = base.ScrapeContext(options={}, **self._context_base(pair))
        current = ctx.current
        health = {"sample_age_s": sample_age_s(current),
                  "bulk_stats_s": current.bulk_duration_s, "unresponsive": len(current.unresponsive),
                  "collector_errors": dict(self.collector_errors_total),
                  "reconnects": self.sampler.connection.reconnects_total}
        return statuspage.build_view(ctx, self.options.get("watermark", {}), health)

    def families(self, pair: SamplePair) -> List[Metric]:
        ctx_base = self._context_base(pair)
        current = ctx_base["current"]
        out: List[Metric] = []
        timings: List[Tuple[str, float, bool]] = []
        for spec in self.collectors:
            started = time.perf_counter()
            ok = False
            # Without libvirt only these have something true to say: host identity, and the perfmon
            # engine's state (it does not depend on this scrape's sample; dropping it would make
            # Prometheus mark its series stale).
            if current.up or spec.name in ("host", "perfmon"):
                ctx = base.ScrapeContext(options=self.options.get(spec.name, {}), **ctx_base)
                try:
                    out.extend(spec.collect(ctx))
                    ok = True
                except Exception:
                    self.collector_errors_total[spec.name] += 1
                    log.exception("collector %s failed", spec.name)
            timings.append((spec.name, time.perf_counter() - started, ok))
        out[:0] = health_families(current, timings, self.sampler.connection.reconnects_total,
                                  self.collector_errors_total, self._build_labels)
        if self.static_registry is not None:
            out.extend(self.static_registry.collect())
        return out


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
        self._pair: Optional[SamplePair] = None

    def prefetch(self) -> None:
        """Take (or wait for, or reuse) the sample; the libvirt part of the scrape."""
        if self._pair is None:
            self._pair = self.exporter.sampler.get(self.timeout_s)

    def collect(self) -> Iterable[Metric]:
        self.prefetch()
        assert self._pair is not None
        return self.exporter.families(self._pair)


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
