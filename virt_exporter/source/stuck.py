"""Bulk stats that one stuck domain cannot stall: concurrent shares, a soft deadline, suspects.

Measured on the test bed (testbed.md): the first call that reaches a stopped QEMU blocks even with
NOWAIT; while it holds that domain's job, later NOWAIT calls return at once with the stuck domain's
block keys missing. vdsm's answer (seed 000) is followed here:

* the domain list is split across ``concurrency`` concurrent ``domainListGetStats`` calls (libvirtd
  works per domain, so shares run in parallel in its worker pool), or one ``getAllDomainStats`` when
  concurrency is 1 and nothing is suspect;
* each call is waited for only a small multiple of the recent typical duration (the soft deadline),
  never past the scrape deadline; a share that is late is asked again with a fresh NOWAIT call,
  which answers at once, and domains that come back incomplete become *suspects*;
* suspects stay out of the scrape's calls for a while; a background prober asks for them alone and
  clears them as soon as they answer completely again.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, wait
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

import libvirt

from . import bulk
from .connection import CallTimeout, Connection, LibvirtUnavailable

log = logging.getLogger(__name__)

# A call is "late" after this many times its recent typical (median) duration…
SOFT_DEADLINE_FACTOR = 3.0
# …but never before this (scheduling noise on a loaded 2-core host is tens of milliseconds). A false
# alarm costs one fresh NOWAIT call, which then finds every domain complete.
SOFT_DEADLINE_MIN_S = 0.25
# Durations the typical one is the median of.
TYPICAL_WINDOW = 7
# How long a domain that did not answer stays out of the scrape's calls without a probe clearing it.
SUSPECT_HOLD_S = 300.0
# How often the prober asks suspects again.
PROBE_INTERVAL_S = 1.0


@dataclasses.dataclass
class StatsResult:
    raw: bulk.RawStats
    unresponsive: Set[str]
    duration_s: float          # wall time of the libvirt stats calls of this sample


class StuckAwareStats:
    """Takes the bulk stats of one sample. Thread-safe for one caller at a time (the sampler is
    single-flight); the prober runs on its own thread."""

    def __init__(self, connection: Connection, groups: Sequence[str], backing: bool, concurrency: int,
                 clock: Any = time.monotonic) -> None:
        self.connection = connection
        self.groups = list(groups)
        self.backing = backing
        self.concurrency = max(1, concurrency)
        self._clock = clock
        self._lock = threading.Lock()
        # uuid → (virDomain, held until); partial stats of suspects from the prober, by uuid.
        self._suspects: Dict[str, Tuple[libvirt.virDomain, float]] = {}
        self._suspect_stats: Dict[str, Tuple[str, Dict[str, Any]]] = {}
        self._recent_s: List[float] = []
        self._probe_wake = threading.Event()
        self._stop = threading.Event()
        self._prober: Optional[threading.Thread] = None
        self._probe_in_flight: Set[str] = set()

    # --- the scrape path ---------------------------------------------------------------------------

    def collect(self, deadline: float) -> StatsResult:
        started = self._clock()
        suspects = self.suspects()
        if self.concurrency == 1 and not suspects:
            shares: List[Optional[List[libvirt.virDomain]]] = [None]  # None: getAllDomainStats
        else:
            domains = self.connection.call(lambda c: c.listAllDomains(0), deadline - self._clock())
            responsive = [d for d in domains if d.UUIDString() not in suspects]
            shares = list(_split(responsive, self.concurrency))
        futures: Dict[Future, Optional[List[libvirt.virDomain]]] = {}
        for share in shares:
            futures[self.connection.submit(self._stats_fn(share), deadline - self._clock())] = share
        soft = min(deadline, started + self._soft_deadline_s())
        raw: bulk.RawStats = []
        pending = set(futures)
        while pending:
            done, pending = wait(pending, timeout=max(0.0, soft - self._clock()), return_when=FIRST_COMPLETED)
            for fut in done:
                raw.extend(fut.result())  # a libvirtError fails the sample: the connection is in doubt
            if not done:
                break
        unresponsive: Set[str] = set()
        if pending:
            for fut in pending:
                self.connection.abandon(fut)
            late = [futures[f] for f in pending]
            raw_late, unresponsive = self._retry_late(late, deadline)
            raw.extend(raw_late)
        duration_s = self._clock() - started
        if not pending:
            self._learn(duration_s)
        # A domain that came back incomplete from an on-time call has its job held elsewhere (an
        # abandoned call on a stuck QEMU): keep it out of the next calls too.
        incomplete = [(dom, uuid, name, stats) for dom, uuid, name, stats in raw
                      if uuid not in unresponsive and bulk.incomplete_groups(stats, self.groups)]
        if incomplete:
            self._suspect(incomplete)
            unresponsive |= {uuid for _d, uuid, _n, _s in incomplete}
        # Domains we kept out of the calls still exist: report them (state only) and flag them.
        with self._lock:
            for uuid in suspects:
                name, stats = self._suspect_stats.get(uuid, ("", {}))
                dom = self._suspects.get(uuid, (None, 0.0))[0]
                if dom is not None:
                    raw.append((dom, uuid, name or dom.name(), {k: v for k, v in stats.items()
                                                                if k.startswith("state.")}))
        unresponsive |= suspects
        return StatsResult(raw=raw, unresponsive=unresponsive, duration_s=duration_s)

    def _retry_late(self, late: List[Optional[List[libvirt.virDomain]]],
                    deadline: float) -> Tuple[bulk.RawStats, Set[str]]:
        """Ask the late shares again with a fresh NOWAIT call: the domain whose job the late call holds
        comes back incomplete at once, the others complete."""
        domains: List[libvirt.virDomain] = []
        if any(share is None for share in late):
            domains = self.connection.call(lambda c: c.listAllDomains(0), deadline - self._clock())
        else:
            for share in late:
                domains.extend(share or [])
        try:
            raw = self.connection.call(self._stats_fn(domains), deadline - self._clock())
        except CallTimeout:
            # Even the NOWAIT retry hangs: every domain of those shares is suspect this time.
            raw = []
        by_uuid = {uuid: stats for _d, uuid, _n, stats in raw}
        bad = [(dom, dom.UUIDString(), dom.name(), by_uuid.get(dom.UUIDString(), {})) for dom in domains
               if dom.UUIDString() not in by_uuid
               or bulk.incomplete_groups(by_uuid[dom.UUIDString()], self.groups)]
        self._suspect(bad)
        return raw, {uuid for _d, uuid, _n, _s in bad}

    def _suspect(self, entries: bulk.RawStats) -> None:
        if not entries:
            return
        until = self._clock() + SUSPECT_HOLD_S
        with self._lock:
            for dom, uuid, name, stats in entries:
                self._suspects[uuid] = (dom, until)
                self._suspect_stats[uuid] = (name, dict(stats))
        log.warning("domains not answering, sampled apart until they do: %s",
                    ", ".join(sorted(name for _d, _u, name, _s in entries)))
        self._ensure_prober()

    def _stats_fn(self, share: Optional[List[libvirt.virDomain]]) -> Any:
        groups, backing = self.groups, self.backing
        if share is None:
            return lambda c: bulk.get_all_domain_stats(c, groups, backing)
        return lambda c: bulk.domain_list_stats(c, share, groups, backing)

    def _soft_deadline_s(self) -> float:
        if not self._recent_s:
            return float("inf")  # first sample: nothing known yet, only the hard deadline applies
        typical_s = sorted(self._recent_s)[len(self._recent_s) // 2]
        return max(SOFT_DEADLINE_MIN_S, SOFT_DEADLINE_FACTOR * typical_s)

    def _learn(self, duration_s: float) -> None:
        # The median of the last few: follows a growing host within a few samples, ignores one spike
        # (a cold first call, a moment of load).
        self._recent_s = (self._recent_s + [duration_s])[-TYPICAL_WINDOW:]

    # --- suspects ----------------------------------------------------------------------------------

    def suspects(self) -> Set[str]:
        now = self._clock()
        with self._lock:
            for uuid in [u for u, (_d, until) in self._suspects.items() if until <= now]:
                self._forget(uuid)
            return set(self._suspects)

    def _forget(self, uuid: str) -> None:
        self._suspects.pop(uuid, None)
        self._suspect_stats.pop(uuid, None)

    def forget(self, uuid: str) -> None:
        """A domain that was destroyed or undefined is no longer suspect."""
        with self._lock:
            self._forget(uuid)

    def _ensure_prober(self) -> None:
        if self._prober is None or not self._prober.is_alive():
            self._prober = threading.Thread(target=self._probe_loop, name="stuck-prober", daemon=True)
            self._prober.start()

    def stop(self) -> None:
        self._stop.set()
        self._probe_wake.set()

    def _probe_loop(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                todo = [(u, d) for u, (d, _until) in self._suspects.items() if u not in self._probe_in_flight]
            if not todo and not self.suspects():
                return
            for uuid, dom in todo:
                self._probe(uuid, dom)
            self._probe_wake.wait(PROBE_INTERVAL_S)
            self._probe_wake.clear()

    def _probe(self, uuid: str, dom: libvirt.virDomain) -> None:
        """Ask one suspect alone, off the scrape's path; clear it when it answers completely."""
        try:
            fut = self.connection.submit(self._stats_fn([dom]), 0.0)
        except LibvirtUnavailable:
            return
        with self._lock:
            self._probe_in_flight.add(uuid)

        def done(f: Future) -> None:
            with self._lock:
                self._probe_in_flight.discard(uuid)
                try:
                    raw = f.result()
                except libvirt.libvirtError as e:
                    if e.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                        self._forget(uuid)
                    return
                if not raw:
                    return
                _d, _u, name, stats = raw[0]
                if bulk.incomplete_groups(stats, self.groups):
                    self._suspect_stats[uuid] = (name, dict(stats))
                else:
                    log.info("domain %s answers again", name)
                    self._forget(uuid)

        fut.add_done_callback(done)


def _split(domains: List[libvirt.virDomain], parts: int) -> List[List[libvirt.virDomain]]:
    """Round-robin shares, none empty: similar sizes whatever the order."""
    parts = max(1, min(parts, len(domains)))
    return [domains[i::parts] for i in range(parts)] if domains else []
