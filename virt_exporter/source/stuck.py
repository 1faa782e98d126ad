"""Bulk stats that one stuck domain cannot stall: concurrent shares, a soft deadline, suspects.

Measured on the test bed: the first call that reaches a stopped QEMU blocks even with
NOWAIT, and holds that domain's job until QEMU answers; while it does, NOWAIT calls return at once
with the stuck domain's monitor groups (block, KVM vCPU counters) missing. vdsm's answer (its periodic
bulk sampling leaves out the domains that do not answer and reads those one at a time, with a timeout,
off the sampling path) is followed, adapted to NOWAIT:

* the domains are split into ``concurrency`` shares by UUID, each asked with ``domainListGetStats``
  on its own lane (libvirtd works per domain, so shares run in parallel in its worker pool), or one
  ``getAllDomainStats`` when concurrency is 1 and nothing is set apart. Each call lists the domains
  on its own connection: a ``virDomain`` is bound to the connection it was listed on, whatever
  connection it is later passed to (connection.py);
* a call is waited for only a small multiple of the recent typical duration of a share (the soft
  deadline, shorter once another call of the sample has answered), never past the scrape deadline,
  and not at all while libvirtd itself has not answered a ping sent beside the calls (a slow or hung
  daemon, not one QEMU). A late call is abandoned and its share asked again with a fresh NOWAIT call,
  which skips the domain the late call holds: that domain comes back partial at once. After a short
  grace (a call that was only slow answers by then, and its complete answer is used) it becomes a
  *suspect*, "captured" by the late call;
* a captured suspect stays in the scrape's calls — NOWAIT answers for it at once, partially, while
  our own blocked call holds its job, so no call waits on it again — and is flagged
  (``libvirt_exporter_domain_unresponsive``). When its captor returns, QEMU has answered: the suspect
  is cleared. If the captor failed instead (its connection was lost), the domain is set apart from
  the scrape's calls (only its state is reported) and a background prober asks it alone until it
  answers completely, or SUSPECT_HOLD_S passes;
* a domain that comes back partial from an on-time call had its job held by someone else for a
  moment (another client, a domain starting): it is asked again in the same scrape, after short
  pauses, and flagged only if still partial. It is not a suspect: it did not block us.

If no call answers by the scrape deadline (a hung libvirtd), ``collect`` raises CallTimeout, and
raises it at once while that sample's ping is still unanswered.

Domains libvirtd is tearing down after a migration (``closing``, from jobs.py) are left out of the
sample altogether: libvirtd holds such a domain's object lock while its QEMU exits, and every call
that enumerates domains waits for that lock, NOWAIT or not (NOWAIT is about the domain's *job*). So
while any domain is closing, each call reuses the domain list its lane made last, minus those.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import functools
import hashlib
import logging
import threading
import time
import weakref
from concurrent.futures import FIRST_COMPLETED, Future, wait
from typing import Any, Callable, Dict, FrozenSet, List, NamedTuple, NoReturn, Optional, Sequence, Set, Tuple

import libvirt

from . import bulk
from .connection import CallTimeout, Connection, LibvirtUnavailable

log = logging.getLogger(__name__)

# A call is "late" after this many times the recent typical (median) duration of a share once another
# call of the same sample has answered (libvirtd and the other QEMUs answer, so this one waits on a
# QEMU of its own), and no sooner than this many times what that other call took…
SOFT_DEADLINE_FACTOR = 2.0
# …or after this many times the typical duration when no other call has answered yet: a host-wide
# slowdown (every QEMU slow to answer on a loaded host) makes every call slow, and asking again would
# only add load.
ALONE_DEADLINE_FACTOR = 4.0
# …but never before this (scheduling noise on a loaded 2-core host is tens of milliseconds). A false
# alarm costs one fresh NOWAIT call, which then finds every domain complete.
SOFT_DEADLINE_MIN_S = 0.25
# A ping libvirtd takes longer than this (or half the typical share) to answer means libvirtd itself
# is slow at the moment: calls waiting then are not late, and their time counts from when it answers.
PING_QUICK_S = 0.1
# Fresh calls for one share in one sample at most: each captures one more stuck domain of the share.
MAX_RETRIES_PER_SHARE = 3
# After the retries, a late call that may hold a domain's job (so the retry saw it partial) is
# waited for this share of the typical duration more: a call that was only slow answers by then.
HELD_GRACE_FACTOR = 0.5
HELD_GRACE_MAX_S = 0.5
# Partial domains are asked again after these pauses, within REASK_BUDGET_S.
REASK_PAUSES_S = (0.0, 0.05, 0.1)
REASK_BUDGET_S = 0.3
# Durations the typical one is the median of.
TYPICAL_WINDOW = 9
# How long a suspect that is no longer captured stays set apart without a probe clearing it.
SUSPECT_HOLD_S = 300.0
# How often the prober asks suspects that are set apart again.
PROBE_INTERVAL_S = 1.0


class SampledDomain(NamedTuple):
    """One domain in a sample's stats: what a call answered for it, or, for a suspect kept out of the
    calls (``domain`` None), its state group as it last answered."""

    domain: Optional[libvirt.virDomain]
    uuid: str
    name: str
    stats: Dict[str, Any]


@dataclasses.dataclass
class StatsResult:
    raw: List[SampledDomain]
    unresponsive: Set[str]
    duration_s: float          # wall time of the libvirt stats calls of this sample
    # What happened, for the debug log: calls made, late calls, retries, re-asks, suspects set apart.
    counts: Dict[str, int] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Spec:
    """Which domains one stats call covers: a share of the UUID space, or explicit UUIDs; minus some."""

    share: Tuple[int, int] = (0, 1)                 # (index, parts)
    uuids: Optional[FrozenSet[str]] = None
    exclude: FrozenSet[str] = frozenset()

    def covers(self, uuid: str) -> bool:
        if uuid in self.exclude:
            return False
        if self.uuids is not None:
            return uuid in self.uuids
        index, parts = self.share
        return parts == 1 or share_of(uuid, parts) == index

    @property
    def everything(self) -> bool:
        return self.uuids is None and self.share[1] == 1 and not self.exclude


@functools.lru_cache(maxsize=65536)
def share_of(uuid: str, parts: int) -> int:
    """The share a domain belongs to: fixed by its UUID, so a domain created or removed between two
    shares' listings never moves another domain from one share to another. A digest, not the UUID's
    own bits (nor crc32, whose low bit follows patterns): UUIDs made in sequence spread evenly too."""
    digest = hashlib.blake2b(uuid.encode("ascii", "replace"), digest_size=8).digest()
    return int.from_bytes(digest, "little") % parts


class _Suspect:
    __slots__ = ("name", "stats", "captors", "until", "probing")

    def __init__(self, name: str, stats: Dict[str, Any], captors: List[Future], until: float) -> None:
        self.name = name
        self.stats = stats
        self.captors = captors      # our calls that (may) hold its job: while one runs, NOWAIT is safe
        self.until = until
        self.probing = False

    def captured(self) -> bool:
        return any(not f.done() for f in self.captors)


class CallKind(enum.Enum):
    SHARE = "share"    # a share of the domains, asked once per sample
    RETRY = "retry"    # a late call's share, asked again
    REASK = "reask"    # the domains that came back partial, asked again


class _Call:
    __slots__ = ("spec", "future", "started", "kind", "chain", "share_no", "late", "consumed", "duration",
                 "last_try")

    def __init__(self, spec: Spec, future: Future, started: float, kind: CallKind, chain: List["_Call"],
                 share_no: int) -> None:
        self.spec = spec
        self.future = future
        self.started = started
        self.kind = kind
        self.chain = chain          # the late calls this one retries: a domain it sees partial may be theirs
        self.share_no = share_no
        self.late = False
        self.consumed = False
        self.duration: Optional[float] = None
        self.last_try = False       # no more retries for its share: wait for it up to the deadline


class _Answer(NamedTuple):
    """A domain's best answer in a sample so far, and the call that gave it."""

    entry: bulk.DomainEntry
    call: _Call


class _UnansweredPing(NamedTuple):
    """The ping of the last sample libvirtd did not answer at all (abandoned), and when it was sent."""

    future: Future
    sent: float


class _Round:
    """One sample's stats calls: the shares, the calls asked again when late, the re-asks of partial
    domains, and what they answered. Lives for one ``StuckAwareStats.collect``."""

    def __init__(self, owner: "StuckAwareStats", deadline: float, captured: Set[str],
                 apart: Dict[str, SampledDomain]) -> None:
        self.owner = owner
        self.connection = owner.connection
        self.groups = owner.groups
        self.clock = owner._clock
        self.deadline = deadline
        self.started = self.clock()
        self.captured = captured
        self.apart = apart
        self.typical_s = owner.typical_s()
        self.counts = {"calls": 0, "late": 0, "retries": 0, "reasks": 0, "pings": 0, "apart": len(apart)}
        self.calls: List[_Call] = []
        self.results: Dict[str, _Answer] = {}
        self.answered = 0
        # The last ping of libvirtd itself (see StuckAwareStats._ping) and when it was sent; whether
        # it was seen answered and whether at once; when libvirtd last came out of a stall (a ping
        # that took long).
        self.ping: Optional[Future] = None
        self.ping_sent = 0.0
        self.ping_judged = False
        self.ping_quick = False
        self.stall_end = self.started
        self.quick_s = max(PING_QUICK_S, (self.typical_s or 0.0) / 2)

    # --- the steps, in order ------------------------------------------------------------------------

    def run(self) -> StatsResult:
        concurrency = self.owner.concurrency
        for i in range(concurrency):
            self.submit(Spec(share=(i, concurrency), exclude=frozenset(self.apart)), CallKind.SHARE, [], i)
        self.run_until_settled()
        if self.answered == 0:
            self.fail_hung()
        self.grace_for_held()
        self.reask_partial()
        return self.result()

    def fail_hung(self) -> NoReturn:
        """No call answered by the deadline: libvirtd is hung unless a ping says otherwise. An
        unanswered ping is remembered, so the next sample fails at once while it stays unanswered."""
        if self.ping is None or self.ping.done():
            with contextlib.suppress(LibvirtUnavailable):
                self.send_ping(self.clock())
        if self.ping is not None and not self.ping.done():
            self.connection.abandon(self.ping)
            self.owner._hung = _UnansweredPing(self.ping, self.ping_sent)
        raise CallTimeout("libvirt answered no stats call within %.2fs" % (self.clock() - self.started))

    def grace_for_held(self) -> None:
        """A late call that was only slow answers soon: give it a moment before calling the domain
        it held unresponsive (a stuck one costs this moment once, at the first scrape that meets it)."""
        held = self.held_by_us()
        if not held or self.typical_s is None:
            return
        grace_end = min(self.deadline, self.clock() + min(HELD_GRACE_MAX_S, HELD_GRACE_FACTOR * self.typical_s))
        while held and self.clock() < grace_end:
            running = {f for futures in held.values() for f in futures}
            wait(running, timeout=max(0.0, grace_end - self.clock()), return_when=FIRST_COMPLETED)
            self.merge_done()
            held = self.held_by_us()

    def reask_partial(self) -> None:
        """Every partial domain is asked again, those a late call of ours may hold too: such a call
        holds one domain's job at a time, the others were held by another client for a moment
        (another exporter's call, a domain starting). A moment may be a monitor round trip on a
        loaded host: up to REASK_PAUSES_S."""
        reask_end = min(self.deadline, self.clock() + REASK_BUDGET_S)
        for round_no, pause_s in enumerate(REASK_PAUSES_S):
            # After the first round, a domain still partial while our late call runs is that call's,
            # and one that stayed partial through the last sample too is held for long (starting, or
            # stuck under another client's call): not worth waiting for.
            ours = self.held_by_us() if round_no else {}
            again = frozenset(uuid for uuid, answer in self.results.items()
                              if uuid not in self.captured and uuid not in ours
                              and not (round_no and uuid in self.owner._partial_before)
                              and bulk.incomplete_groups(answer.entry.stats, self.groups))
            if not again or self.clock() + pause_s >= reask_end:
                return
            if pause_s:
                time.sleep(pause_s)
            try:
                self.submit(Spec(uuids=again), CallKind.REASK, [], -1)
            except LibvirtUnavailable as e:
                log.debug("cannot ask partial domains again: %s", e)
                return
            self.counts["reasks"] += 1
            self.run_until_settled()

    def result(self) -> StatsResult:
        unresponsive: Set[str] = set()
        raw: List[SampledDomain] = []
        for uuid, answer in self.results.items():
            raw.append(SampledDomain(*answer.entry))
            if bulk.incomplete_groups(answer.entry.stats, self.groups):
                unresponsive.add(uuid)
        self.owner._partial_before = frozenset(unresponsive)
        self.owner._update_suspects(self.results, self.held_by_us())
        # Domains kept out of the calls still exist: report their state and flag them, as they were
        # when the sample started (a probe may clear one meanwhile: it is still missing from this
        # sample's calls). Their other counters, from a probe at another moment, would make rates
        # over the wrong interval.
        for uuid, kept_out in self.apart.items():
            if uuid not in self.results:
                raw.append(kept_out)
                unresponsive.add(uuid)
        return StatsResult(raw=raw, unresponsive=unresponsive, duration_s=self.clock() - self.started,
                           counts=self.counts)

    # --- calls --------------------------------------------------------------------------------------

    def submit(self, spec: Spec, kind: CallKind, chain: List[_Call], share_no: int) -> _Call:
        now = self.clock()
        fut = self.connection.submit(self.owner._stats_fn(spec))
        call = _Call(spec, fut, now, kind, chain, share_no)
        self.calls.append(call)
        self.counts["calls"] += 1
        if kind is CallKind.SHARE:
            fut.add_done_callback(functools.partial(self.owner._learn, started=now))
        return call

    def merge(self, call: _Call) -> None:
        call.consumed = True
        call.duration = self.clock() - call.started
        try:
            raw = call.future.result()
        except libvirt.libvirtError as e:
            if call.late or call.kind is CallKind.REASK:
                log.debug("stats call failed: %s", e.get_error_message())
                return  # given up on already, or an extra: the sample stands without it
            raise
        self.answered += 1
        for entry in raw:
            old = self.results.get(entry.uuid)
            if old is None or (bulk.incomplete_groups(old.entry.stats, self.groups)
                               and not bulk.incomplete_groups(entry.stats, self.groups)):
                self.results[entry.uuid] = _Answer(entry, call)

    def merge_done(self) -> None:
        for call in self.calls:
            if call.future.done() and not call.consumed:
                self.merge(call)

    def waiting(self) -> List[_Call]:
        """The calls still waited for: not given up on, not answered."""
        return [c for c in self.calls if not c.late and not c.future.done()]

    def run_until_settled(self) -> None:
        """Wait for every call we still wait for; ask late ones again while time remains."""
        while True:
            self.merge_done()
            waiting = self.waiting()
            if not waiting:
                return
            now = self.clock()
            if now >= self.deadline:
                for call in waiting:
                    call.late = True
                    self.connection.abandon(call.future)
                return
            self.judge_ping(now)
            slow = [c for c in waiting if now >= self.slow_at(c)]
            if slow and (self.ping is None or self.ping_sent < max(self.slow_at(c) for c in slow)):
                if self.ping is None or self.ping.done():
                    try:
                        self.send_ping(now)
                    except LibvirtUnavailable as e:
                        log.debug("cannot ping libvirtd: %s", e)
            for call in [c for c in slow if self.late(c)]:
                self.retry(call)
            self.wait_next(now)

    def retry(self, call: _Call) -> None:
        """Ask a late call's share again with a fresh NOWAIT call, and give up on the late one."""
        if sum(1 for c in self.calls if c.share_no == call.share_no and c.kind is CallKind.RETRY) \
                >= MAX_RETRIES_PER_SHARE:
            call.last_try = True
            return
        try:
            self.submit(call.spec, CallKind.RETRY, call.chain + [call], call.share_no)
        except LibvirtUnavailable as e:
            log.debug("cannot ask a late share again: %s", e)
            call.last_try = True
            return
        call.late = True
        self.counts["late"] += 1
        self.counts["retries"] += 1
        self.connection.abandon(call.future)

    def wait_next(self, now: float) -> None:
        """Until a call or the ping answers, or the next call turns slow."""
        # Late calls are watched too: one that answers after all is used.
        pending = [c.future for c in self.calls if not c.future.done()]
        if self.ping is not None and not self.ping_judged:
            pending.append(self.ping)  # until judged (judge_ping): done already, wait returns
        next_at = min([t for t in (self.slow_at(c) for c in self.waiting()) if t > now] + [self.deadline])
        wait(pending, timeout=max(0.0, next_at - self.clock()), return_when=FIRST_COMPLETED)

    def held_by_us(self) -> Dict[str, List[Future]]:
        """Partial domains whose job one of our late calls may hold: the calls, by domain."""
        out: Dict[str, List[Future]] = {}
        for uuid, answer in self.results.items():
            if uuid in self.captured or not bulk.incomplete_groups(answer.entry.stats, self.groups):
                continue
            running = [c.future for c in answer.call.chain if not c.future.done()]
            if running:
                out[uuid] = running
        return out

    # --- lateness -----------------------------------------------------------------------------------

    def send_ping(self, now: float) -> None:
        self.ping = self.owner._ping()
        self.ping_sent = now
        self.ping_judged = self.ping_quick = False
        self.counts["pings"] += 1

    def judge_ping(self, now: float) -> None:
        """Judge the ping once it is seen answered (it is waited for with the calls, so that is
        as soon as it answers)."""
        fut = self.ping
        if fut is None or self.ping_judged or not fut.done():
            return
        ok = not fut.cancelled() and fut.exception() is None
        self.ping_judged = True
        self.ping_quick = ok and now - self.ping_sent <= self.quick_s
        if ok and not self.ping_quick:
            self.stall_end = now

    def slow_at(self, call: _Call) -> float:
        """When the call is slower than it should be: a multiple of the typical share, counted
        from when it started or libvirtd last came out of a stall, whichever is later."""
        typical_s = self.typical_s
        if typical_s is None or call.last_try:
            return self.deadline  # first sample: nothing known yet, only the hard deadline applies
        others = [c.duration for c in self.calls if c is not call and c.duration is not None and not c.late]
        if others:
            limit = max(SOFT_DEADLINE_MIN_S, SOFT_DEADLINE_FACTOR * typical_s, SOFT_DEADLINE_FACTOR * max(others))
        else:
            limit = max(SOFT_DEADLINE_MIN_S, ALONE_DEADLINE_FACTOR * typical_s)
        # The k-th retry of a share waits k+1 times as long: a second stuck domain in one share is
        # rare, a host slow for a moment is not, and every retry adds to its load.
        return min(self.deadline, max(call.started, self.stall_end) + limit * (1 + len(call.chain)))

    def late(self, call: _Call) -> bool:
        """Slow, and libvirtd answered a ping sent since at once: the call waits on a QEMU of its
        own, not on libvirtd (hung, or busy with domain locks while it starts or destroys one)."""
        return (self.ping is not None and self.ping_sent >= self.slow_at(call)
                and self.ping_judged and self.ping_quick)


class StuckAwareStats:
    """Takes the bulk stats of one sample. One caller at a time (the sampler is single-flight); the
    prober runs on its own thread."""

    def __init__(self, connection: Connection, groups: Sequence[str], backing: bool, concurrency: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.connection = connection
        self.groups = list(groups)
        self.backing = backing
        self.concurrency = max(1, concurrency)
        self._clock = clock
        self._lock = threading.Lock()
        self._suspects: Dict[str, _Suspect] = {}
        self._recent_s: List[float] = []
        self._probe_wake = threading.Event()
        self._stop = threading.Event()
        self._prober: Optional[threading.Thread] = None
        # Domains still partial at the end of the last sample.
        self._partial_before: FrozenSet[str] = frozenset()
        self._hung: Optional[_UnansweredPing] = None
        # Domains to leave out of the calls now, and this sample's answer (see the module docs).
        self.closing: Callable[[], FrozenSet[str]] = frozenset
        self._closing_now: FrozenSet[str] = frozenset()
        # Each lane's last domain list, reused while a domain is closing.
        self._listed: "weakref.WeakKeyDictionary[libvirt.virConnect, List[libvirt.virDomain]]" = \
            weakref.WeakKeyDictionary()

    # --- the scrape path ---------------------------------------------------------------------------

    def collect(self, deadline: float) -> StatsResult:
        self._check_hung(self._clock())
        captured, apart = self._suspect_split()
        self._closing_now = self.closing()
        return _Round(self, deadline, captured, apart).run()

    def _check_hung(self, now: float) -> None:
        """While the ping of the last sample that got no answer at all is still unanswered, libvirtd
        is hung: fail at once instead of waiting out the deadline again."""
        hung = self._hung
        if hung is not None:
            if not hung.future.done() and self.connection.current(hung.future):
                raise CallTimeout("libvirtd has not answered for %.1fs" % (now - hung.sent))
            self._hung = None

    def _ping(self) -> Future:
        """A cheap call only libvirtd itself answers, sent when a stats call is slow: if it answers,
        the slow call waits on a QEMU (late: ask its share again); if not, on libvirtd, and asking
        again would only add to its load.

        The ping counts the domains: like listing them, as every stats call does first, that takes
        each domain's lock, which libvirtd holds for seconds while it starts or destroys a domain
        (measured under churn: both shares late together, one of them empty), but not while a call
        waits on a QEMU monitor (libvirtd lets go of it then)."""
        return self.connection.submit(lambda c: c.numOfDomains(), cheap=True)

    def _update_suspects(self, results: Dict[str, _Answer], held: Dict[str, List[Future]]) -> None:
        new: List[Tuple[str, str]] = []
        until = self._clock() + SUSPECT_HOLD_S
        with self._lock:
            for uuid, answer in results.items():
                name, stats = answer.entry.name, answer.entry.stats
                suspect = self._suspects.get(uuid)
                complete = not bulk.incomplete_groups(stats, self.groups)
                if suspect is not None:
                    if complete:
                        log.info("domain %s answers again", name)
                        del self._suspects[uuid]
                    else:
                        suspect.stats = dict(stats)
                        suspect.until = until
                elif uuid in held:
                    self._suspects[uuid] = _Suspect(name, dict(stats), held[uuid], until)
                    new.append((uuid, name))
        # Outside the lock: a captor that returned meanwhile runs its callback right here.
        for uuid, _name in new:
            for fut in held[uuid]:
                fut.add_done_callback(functools.partial(self._captor_done_callback, uuid))
        if new:
            log.warning("domains not answering, flagged until they answer again: %s",
                        ", ".join(sorted(name for _u, name in new)))
            self._ensure_prober()

    def _captor_done_callback(self, uuid: str, _future: Future) -> None:
        self._captor_done(uuid)

    def _captor_done(self, uuid: str) -> None:
        """The last of our calls holding a suspect's job returned: QEMU answered, the suspect is
        cleared. If one failed instead (connection lost), the domain is set apart and probed."""
        try:
            with self._lock:
                suspect = self._suspects.get(uuid)
                if suspect is None or suspect.captured():
                    return
                if all(f.exception() is None for f in suspect.captors if not f.cancelled()):
                    del self._suspects[uuid]
                    log.info("domain %s answers again", suspect.name)
                    return
            self._probe_wake.set()
        except Exception as e:  # a done-callback must never raise (it would be logged as a traceback)
            log.debug("suspect %s: %s", uuid, e)

    def _stats_fn(self, spec: Spec) -> Callable[[libvirt.virConnect], List[bulk.DomainEntry]]:
        groups, backing, closing = self.groups, self.backing, self._closing_now
        if spec.everything and not closing:
            def everything(conn: libvirt.virConnect) -> List[bulk.DomainEntry]:
                raw = bulk.get_all_domain_stats(conn, groups, backing)
                self._listed[conn] = [entry.domain for entry in raw]
                return raw

            return everything

        def call(conn: libvirt.virConnect) -> List[bulk.DomainEntry]:
            # Listed on this call's own connection: a virDomain from another lane would route the
            # stats call over that lane (connection.py). While a domain is closing, listing would
            # wait for it: the lane's last list stands (a domain that went since is skipped by
            # libvirt, one that came is listed at the next sample).
            listed = self._listed.get(conn) if closing else None
            if listed is None:
                listed = conn.listAllDomains(0)
                self._listed[conn] = listed
            domains = [d for d in listed if spec.covers(d.UUIDString()) and d.UUIDString() not in closing]
            return bulk.domain_list_stats(conn, domains, groups, backing)

        return call

    def typical_s(self) -> Optional[float]:
        """The recent typical (median) duration of a share call, None before the first one."""
        with self._lock:
            recent = sorted(self._recent_s)
        return recent[len(recent) // 2] if recent else None

    def _learn(self, future: Future, started: float) -> None:
        """Record a share call's duration when it returns, on time or not. A call stuck behind a
        QEMU for a minute would drag the typical duration up: ignore outliers past 10x it."""
        try:
            if future.cancelled() or future.exception() is not None:
                return
            duration_s = self._clock() - started
            with self._lock:
                recent = sorted(self._recent_s)
                if len(recent) >= 3 and duration_s > 10 * recent[len(recent) // 2]:
                    return
                # The median of the last few: follows a growing host within a few samples, ignores
                # one spike (a cold first call, a moment of load).
                self._recent_s = (self._recent_s + [duration_s])[-TYPICAL_WINDOW:]
        except Exception as e:  # a done-callback must never raise (it would be logged as a traceback)
            log.debug("cannot record a stats call duration: %s", e)

    # --- suspects ----------------------------------------------------------------------------------

    def _suspect_split(self) -> Tuple[Set[str], Dict[str, SampledDomain]]:
        """(captured suspects, suspects set apart with their name and state group), forgetting those
        whose hold has passed."""
        now = self._clock()
        with self._lock:
            for uuid in [u for u, s in self._suspects.items() if s.until <= now and not s.captured()]:
                del self._suspects[uuid]
            captured = {u for u, s in self._suspects.items() if s.captured()}
            apart = {u: SampledDomain(None, u, s.name, {k: v for k, v in s.stats.items() if k.startswith("state.")})
                     for u, s in self._suspects.items() if u not in captured}
        return captured, apart

    def suspects(self) -> Set[str]:
        with self._lock:
            return set(self._suspects)

    def forget(self, uuid: str) -> None:
        """A domain that was destroyed or undefined is no longer suspect."""
        with self._lock:
            self._suspects.pop(uuid, None)

    def _ensure_prober(self) -> None:
        if self._prober is None or not self._prober.is_alive():
            self._prober = threading.Thread(target=self._probe_loop, name="stuck-prober", daemon=True)
            self._prober.start()

    def stop(self) -> None:
        self._stop.set()
        self._probe_wake.set()

    def _probe_loop(self) -> None:
        while not self._stop.is_set():
            self._suspect_split()  # expire
            with self._lock:
                if not self._suspects:
                    self._prober = None
                    return
                todo = [u for u, s in self._suspects.items() if not s.captured() and not s.probing]
            for uuid in todo:
                self._probe(uuid)
            self._probe_wake.wait(PROBE_INTERVAL_S)
            self._probe_wake.clear()

    def _probe(self, uuid: str) -> None:
        """Ask one suspect alone, off the scrape's path; a complete answer clears it. The probe
        is abandoned at once (its lane avoided while it runs) and captures the domain if it blocks."""
        spec = Spec(uuids=frozenset([uuid]))
        try:
            fut = self.connection.submit(self._stats_fn(spec))
        except LibvirtUnavailable:
            return
        self.connection.abandon(fut)
        with self._lock:
            suspect = self._suspects.get(uuid)
            if suspect is None:
                return
            suspect.probing = True
            suspect.captors = [fut]

        def done(f: Future) -> None:
            try:
                self._probed(uuid, f)
            except Exception as e:  # a done-callback must never raise
                log.debug("probe of %s: %s", uuid, e)

        fut.add_done_callback(done)

    def _probed(self, uuid: str, f: Future) -> None:
        with self._lock:
            suspect = self._suspects.get(uuid)
            if suspect is None:
                return
            suspect.probing = False
            error = f.exception()
            if error is not None:
                if isinstance(error, libvirt.libvirtError) and error.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                    del self._suspects[uuid]
                return
            raw = f.result()
            if not raw:  # gone (listed by nobody)
                del self._suspects[uuid]
                return
            entry = raw[0]
            if not bulk.incomplete_groups(entry.stats, self.groups):
                del self._suspects[uuid]
                log.info("domain %s answers again", entry.name)
            else:
                suspect.stats = dict(entry.stats)
