"""The single-flight sampler: the one place that decides when a sample is read.

Like vdsm's sampler it owns time: it stamps a sample before the reads, bounds them by a deadline and
hands out (previous, current). Concurrent scrapers and the perfmon engine share one in-flight sample;
a request within ``min_interval_s`` of the last one reuses it (two Prometheus servers never get a
rate over milliseconds). Each new sample goes to the subscribers (the NUMA reader's targets,
threshold arming), as vdsm hands samples to their consumers. source/reader.py does the reading.

``previous`` is the last good sample, kept across a failed one (libvirtd restarting) so rates go on
after a short outage, but only for what the counters prove comparable (``comparable_previous``).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import libvirt

from .sample import Sample
from .source.connection import Connection
from .source.domxml import DomainXMLCache
from .source.reader import SampleReader

log = logging.getLogger(__name__)

SamplePair = Tuple[Optional[Sample], Sample]

# An older previous sample gives no rates: after a long outage the first sample is a new baseline.
PREVIOUS_MAX_GAP_S = 600.0
# How long a stop / undefine event is remembered for samples in flight.
GONE_MEMORY_S = 60.0


@dataclasses.dataclass
class SamplerOptions:
    groups: Sequence[str]
    backing: bool = True
    min_interval_s: float = 1.0
    timeout_s: float = 5.0
    host_root: str = "/"
    concurrency: int = 1
    read_qemu_pids: bool = False


class Sampler:
    def __init__(self, connection: Connection, xml_cache: DomainXMLCache, options: SamplerOptions,
                 clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time) -> None:
        self.connection = connection
        self.xml_cache = xml_cache
        self.options = options
        self.reader = SampleReader(connection, xml_cache, options.groups, options.backing, options.concurrency,
                                   options.read_qemu_pids, options.host_root, clock)
        self._clock = clock
        self._wall_clock = wall_clock
        self._cond = threading.Condition()
        self._in_flight = False
        self._generation = 0
        self._current: Optional[Sample] = None
        self._previous: Optional[Sample] = None   # last good sample before _current
        self._last_good: Optional[Sample] = None
        self.samples_total = 0
        self._subscribers: List[Callable[[Sample], None]] = []
        # uuid → (monotonic time, event) of the last stop / undefine event, for samples in flight.
        self._gone: Dict[str, Tuple[float, int]] = {}
        xml_cache.register_events(connection.on_event)
        xml_cache.subscribe(self._on_lifecycle)

    def subscribe(self, on_sample: Callable[[Sample], None]) -> None:
        """Call ``on_sample(sample)`` with every new sample, in the thread that took it, after it is
        served. It must be quick (queue work, do not do it) and is never allowed to fail a scrape."""
        self._subscribers.append(on_sample)

    def stop(self) -> None:
        self.reader.stop()

    def _on_lifecycle(self, uuid: str, event: int, detail: int) -> None:
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
        timeout_s = self.options.timeout_s if timeout_s is None else min(timeout_s, self.options.timeout_s)
        with self._cond:
            cur = self._current
            if cur is not None and self._clock() - cur.monotonic_s < self.options.min_interval_s:
                return self._previous, cur
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
                    return self._previous, self._current
            self._in_flight = True
            # The oldest sample is needed by nobody once a new one is being taken (scrapes arriving
            # now wait for the new one): let it go before the new dicts arrive, a third of the peak
            # memory at a thousand domains.
            self._previous = None
        sample: Optional[Sample] = None
        try:
            started = self._clock()
            # Timestamps before any read: the counters moved during [previous start, this start].
            sample = self.reader.read(started, self._wall_clock(), started + timeout_s)
        finally:
            with self._cond:
                self._in_flight = False
                if sample is not None:
                    sample = self._publish(sample)
                    previous = self._previous
                self._generation += 1
                self._cond.notify_all()
        self._notify(sample)
        return previous, sample

    def _publish(self, sample: Sample) -> Sample:
        """Make ``sample`` current; returns it as served (without domains gone meanwhile)."""
        self.samples_total += 1
        sample = self._without_gone(sample)
        self._current = sample
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


def comparable_previous(previous: Optional[Sample], current: Sample) -> Optional[Sample]:
    """``previous`` as far as rates against ``current`` are valid, or None.

    None when there is no previous sample or it is older than PREVIOUS_MAX_GAP_S. Otherwise the same
    sample without the domains that restarted in between — a new domain ID (libvirt numbers every
    start) or, where IDs are unknown, a cpu.time that went backwards — so no calculator can take a
    delta across a restart. Across a libvirtd restart running domains keep their IDs and counters:
    their rates go on.
    """
    if previous is None or not previous.up:
        return None
    if not 0 < current.monotonic_s - previous.monotonic_s <= PREVIOUS_MAX_GAP_S:
        return None
    prev_ids, cur_ids = previous.domain_ids, current.domain_ids
    drop = []
    for uuid, cur in current.domains.items():
        prev = previous.domains.get(uuid)
        if prev is None or not (prev.active and cur.active):
            continue
        prev_id, cur_id = prev_ids.get(uuid), cur_ids.get(uuid)
        if prev_id is not None and cur_id is not None and prev_id != cur_id:
            drop.append(uuid)
            continue
        prev_ns, cur_ns = prev.stats.get("cpu.time"), cur.stats.get("cpu.time")
        if prev_ns is not None and cur_ns is not None and cur_ns < prev_ns:
            drop.append(uuid)
    if not drop:
        return previous
    return dataclasses.replace(previous, domains={u: d for u, d in previous.domains.items() if u not in drop})
