"""The single-flight sampler: the one place that decides when a sample is read.

Like vdsm's sampler it owns time: it stamps a sample before the reads, bounds them by a deadline and
hands out (previous, current). Concurrent scrapers and the perfmon engine share one in-flight sample;
a request within ``min_interval_s`` of the last one reuses it (two Prometheus servers never get a
rate over milliseconds). Each new sample goes to the subscribers (the NUMA reader's targets,
threshold arming), as vdsm hands samples to their consumers. A reader does the reading
(source/reader.py), as vdsm's monitor feeds its stats cache; the app wires the events.

``previous`` is the last good sample, kept across a failed one (libvirtd restarting) so rates go on
after a short outage, but only for what the counters prove comparable (``comparable_previous``).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from typing import Callable, Dict, List, Mapping, Optional, Protocol, Tuple

import libvirt

from .calc.comparable import comparable_previous
from .sample import ConnectionHealth, DomainInfo, Sample
from .snapshot import BackgroundReadings, Snapshot

log = logging.getLogger(__name__)

SamplePair = Tuple[Optional[Sample], Sample]

# How long a stop / undefine event is remembered for samples in flight.
GONE_MEMORY_S = 60.0


class SampleSource(Protocol):
    """What reads a sample (source/reader.py's SampleReader; a fake in tests)."""

    def read(self, started: float, wall_time_s: float, deadline: float) -> Sample: ...

    def forget(self, uuid: str) -> None: ...

    def stop(self) -> None: ...


@dataclasses.dataclass
class SamplerOptions:
    min_interval_s: float = 1.0
    timeout_s: float = 5.0


class Sampler:
    """Owns when a sample is read; ``snapshot()`` publishes it with what a scrape reads beside it:
    ``domain_info()`` is asked right after each read (the XML as of that sample), ``connection_health()``
    and ``background()`` at each request."""

    def __init__(self, reader: SampleSource, options: SamplerOptions, *,
                 domain_info: Callable[[], Mapping[str, DomainInfo]] = dict,
                 connection_health: Callable[[], ConnectionHealth] = ConnectionHealth,
                 background: Callable[[], BackgroundReadings] = BackgroundReadings,
                 clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time) -> None:
        self.reader = reader
        self.options = options
        self._domain_info = domain_info
        self._connection_health = connection_health
        self._background = background
        self._clock = clock
        self._wall_clock = wall_clock
        self._cond = threading.Condition()
        self._in_flight = False
        self._generation = 0
        self._current: Optional[Sample] = None
        self._current_info: Mapping[str, DomainInfo] = {}
        self._previous: Optional[Sample] = None   # last good sample before _current
        self._last_good: Optional[Sample] = None
        self.samples_total = 0
        self._subscribers: List[Callable[[Sample], None]] = []
        # uuid → (monotonic time, event) of the last stop / undefine event, for samples in flight.
        self._gone: Dict[str, Tuple[float, int]] = {}

    def subscribe(self, on_sample: Callable[[Sample], None]) -> None:
        """Call ``on_sample(sample)`` with every new sample, in the thread that took it, after it is
        served. It must be quick (queue work, do not do it) and is never allowed to fail a scrape."""
        self._subscribers.append(on_sample)

    def stop(self) -> None:
        self.reader.stop()

    def on_lifecycle(self, uuid: str, event: int, detail: int) -> None:
        """A domain lifecycle event (the app subscribes this to the domain XML cache's events)."""
        # A destroyed or undefined domain leaves a reused sample at once (issue: no series of a
        # domain that is gone may be served from the cache).
        if event not in (libvirt.VIR_DOMAIN_EVENT_STOPPED, libvirt.VIR_DOMAIN_EVENT_UNDEFINED):
            return
        self.reader.forget(uuid)
        with self._cond:
            now = self._clock()
            # A sample in flight may have read the domain before this event: _publish drops it.
            self._gone = {u: g for u, g in self._gone.items() if now - g[0] < GONE_MEMORY_S}
            self._gone[uuid] = (now, event)
            cur = self._current
            if cur is not None and uuid in cur.domains:
                domains = {u: d for u, d in cur.domains.items() if u != uuid}
                self._current = dataclasses.replace(cur, domains=domains)

    # --- single flight ----------------------------------------------------------------------------

    def get(self, timeout_s: Optional[float] = None) -> SamplePair:
        """(previous good sample, current sample), taking a new one unless one is in flight (then
        wait for it) or the last one is younger than min_interval_s (then reuse it)."""
        previous, current, _ = self._get(timeout_s)
        return previous, current

    def snapshot(self, timeout_s: Optional[float] = None) -> Snapshot:
        """What a scrape reads: the pair ``get`` gives, the domain XML as of its current sample, the
        connection's health and the background readings now."""
        previous, current, domain_info = self._get(timeout_s)
        return Snapshot(current=current, previous=previous, domain_info=domain_info,
                        connection=self._connection_health(), background=self._background())

    def _get(self, timeout_s: Optional[float]) -> Tuple[Optional[Sample], Sample, Mapping[str, DomainInfo]]:
        timeout_s = self.options.timeout_s if timeout_s is None else min(timeout_s, self.options.timeout_s)
        with self._cond:
            cur = self._current
            if cur is not None and self._clock() - cur.monotonic_s < self.options.min_interval_s:
                return self._previous, cur, self._current_info
            if self._in_flight:
                generation = self._generation
                # Our own deadline, not the sample's: a scrape with Prometheus's shorter timeout gets
                # the last sample rather than no answer.
                deadline = self._clock() + timeout_s
                while self._in_flight and self._generation == generation:
                    remaining = deadline - self._clock()
                    if remaining <= 0:
                        break
                    self._cond.wait(remaining)
                if self._current is not None:
                    return self._previous, self._current, self._current_info
            self._in_flight = True
            # The oldest sample is needed by nobody once a new one is being taken (scrapes arriving
            # now wait for the new one): let it go before the new dicts arrive, a third of the peak
            # memory at a thousand domains.
            self._previous = None
        sample: Optional[Sample] = None
        domain_info: Mapping[str, DomainInfo] = {}
        try:
            started = self._clock()
            # Timestamps before any read: the counters moved during [previous start, this start].
            read = self.reader.read(started, self._wall_clock(), started + timeout_s)
            # The XML the read just refreshed: what the sample's domains looked like. A sample is
            # published only with it.
            domain_info = self._domain_info()
            sample = read
        finally:
            with self._cond:
                self._in_flight = False
                if sample is not None:
                    sample = self._publish(sample, domain_info)
                    previous = self._previous
                self._generation += 1
                self._cond.notify_all()
        self._notify(sample)
        return previous, sample, domain_info

    def _publish(self, sample: Sample, domain_info: Mapping[str, DomainInfo]) -> Sample:
        """Make ``sample`` current; returns it as served (without domains gone meanwhile)."""
        self.samples_total += 1
        sample = self._without_gone(sample)
        self._current = sample
        self._current_info = domain_info
        if sample.up:
            self._previous = comparable_previous(self._last_good, sample)
            self._last_good = sample
        else:
            self._previous = None
        return sample

    def _notify(self, sample: Sample) -> None:
        for on_sample in self._subscribers:
            try:
                on_sample(sample)
            except Exception:  # a consumer's bug must not fail the scrape that took the sample
                log.exception("sample subscriber %r failed", on_sample)

    def _without_gone(self, sample: Sample) -> Sample:
        """Drop domains a stop or undefine event announced after this sample started: their stats
        may predate it. A stopped domain the sample already saw shut off stays."""
        drop = [uuid for uuid, (at, event) in self._gone.items()
                if at >= sample.monotonic_s and uuid in sample.domains
                and (event == libvirt.VIR_DOMAIN_EVENT_UNDEFINED or sample.domains[uuid].active)]
        if not drop:
            return sample
        domains = {u: d for u, d in sample.domains.items() if u not in drop}
        return dataclasses.replace(sample, domains=domains,
                                   unresponsive=frozenset(u for u in sample.unresponsive if u not in drop))
