"""source.stuck, source.connection's lanes and the sampler's previous/current bookkeeping, against a
scripted libvirtd.

The fake keeps the semantics measured on the test bed (testbed.md), which are what the mechanism is
built on: one job per domain; a stats call takes each domain's job in turn, and with NOWAIT skips a
domain whose job is held, returning it partial (block counters missing); a stopped QEMU keeps the
job of the call that reached it until it answers again; a ``virDomain`` belongs to the connection it
was listed on. The real thing (SIGSTOP on a QEMU, on libvirtd) is in tests/integration/test_fault_*.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, Iterator, List, Optional

import libvirt
import pytest

from virt_exporter import sampler as sampler_mod
from virt_exporter.sample import DomainStats, Sample
from virt_exporter.sampler import Sampler, SamplerOptions, comparable_previous
from virt_exporter.source import bulk, stuck
from virt_exporter.source.connection import CallTimeout, Connection, LibvirtUnavailable
from virt_exporter.source.domxml import DomainXMLCache

GROUPS = list(bulk.GROUP_FLAGS)
NOWAIT = libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_NOWAIT
TEST_BOUND_S = 30
pytestmark = pytest.mark.timeout(TEST_BOUND_S)


# --- a scripted libvirtd ---------------------------------------------------------------------------


class FakeVM:
    def __init__(self, n: int) -> None:
        self.uuid = "%08x-0000-4000-8000-%012x" % (n, n)
        self.name = "vm%d" % n
        self.id = n
        self.job = threading.Lock()
        self.answering = threading.Event()  # cleared: the QEMU is stopped (SIGSTOP)
        self.answering.set()
        self.delay_s = 0.0                  # one-off extra monitor time (a slow, not stuck, QEMU)
        self.cpu_ns = 1000 * n


class FakeHost:
    """libvirtd: domains, per-domain jobs, a stop switch for each QEMU and one for the daemon."""

    def __init__(self, n_domains: int, work_s: float = 0.005) -> None:
        self.vms = {vm.uuid: vm for vm in (FakeVM(i + 1) for i in range(n_domains))}
        self.work_s = work_s
        self.alive = threading.Event()      # cleared: libvirtd stopped (SIGSTOP)
        self.alive.set()
        self.wrong_connection = 0           # calls naming domains listed on another connection
        self.stats_calls = 0
        self.opened = 0
        self.broken = False                 # set: calls waiting on a stopped QEMU fail (connection lost)
        self.lock = threading.Lock()

    def open(self, uri: Optional[str] = None) -> "FakeConn":
        self.alive.wait()
        with self.lock:
            self.opened += 1
        return FakeConn(self)

    def stop_qemu(self, vm: FakeVM) -> None:
        vm.answering.clear()

    def cont_qemu(self, vm: FakeVM) -> None:
        vm.answering.set()

    def hold_job(self, vm: FakeVM, seconds: float) -> None:
        """Another client holds the domain's job for a moment."""
        vm.job.acquire()
        threading.Timer(seconds, vm.job.release).start()


class FakeDom:
    def __init__(self, vm: FakeVM, conn: "FakeConn") -> None:
        self.vm, self.conn = vm, conn

    def UUIDString(self) -> str:
        return self.vm.uuid

    def name(self) -> str:
        return self.vm.name

    def ID(self) -> int:
        return self.vm.id

    def XMLDesc(self, flags: int = 0) -> str:
        self.conn._gate()
        return ("<domain type='kvm'><name>%s</name><uuid>%s</uuid><memory>65536</memory><vcpu>1</vcpu>"
                "<os><type arch='x86_64' machine='pc'>hvm</type></os><devices/></domain>"
                % (self.vm.name, self.vm.uuid))


class FakeConn:
    _ids = itertools.count(1)

    def __init__(self, host: FakeHost) -> None:
        self.host = host
        self.number = next(self._ids)

    def _gate(self) -> None:
        self.host.alive.wait()

    # connection-level calls libvirtd answers itself
    def listAllDomains(self, flags: int = 0) -> List[FakeDom]:
        self._gate()
        return [FakeDom(vm, self) for vm in list(self.host.vms.values())]

    def lookupByUUIDString(self, uuid: str) -> FakeDom:
        self._gate()
        vm = self.host.vms.get(uuid)
        if vm is None:
            raise _no_domain()
        return FakeDom(vm, self)

    def getLibVersion(self) -> int:
        self._gate()
        return 9000000

    def numOfDomains(self) -> int:
        self._gate()
        return len(self.host.vms)

    def getVersion(self) -> int:
        return 7002000

    def getHostname(self) -> str:
        return "fake"

    def getInfo(self) -> List[Any]:
        return ["x86_64", 4096, 2, 2400, 1, 1, 2, 1]

    def getCapabilities(self) -> str:
        return ("<capabilities><host><topology><cells num='1'><cell id='0'><cpus num='2'>"
                "<cpu id='0'/><cpu id='1'/></cpus></cell></cells></topology></host></capabilities>")

    def getMemoryStats(self, cell: int, flags: int = 0) -> Dict[str, int]:
        self._gate()
        return {"total": 4 << 20, "free": 1 << 20}

    def setKeepAlive(self, *a: Any) -> None:
        pass

    def registerCloseCallback(self, *a: Any) -> None:
        pass

    def unregisterCloseCallback(self) -> None:
        pass

    def domainEventRegisterAny(self, *a: Any) -> int:
        return 1

    def domainEventDeregisterAny(self, *a: Any) -> None:
        pass

    def close(self) -> int:
        return 0

    # stats: the QEMU monitor is reached only with the domain's job held
    def domainListGetStats(self, doms: List[FakeDom], mask: int, flags: int) -> List[Any]:
        self._gate()
        if any(d.conn is not self for d in doms):
            with self.host.lock:
                self.host.wrong_connection += 1
        return [(d, self._stats(d.vm, flags)) for d in doms if d.vm.uuid in self.host.vms]

    def getAllDomainStats(self, mask: int, flags: int) -> List[Any]:
        return self.domainListGetStats(self.listAllDomains(), mask, flags)

    def _stats(self, vm: FakeVM, flags: int) -> Dict[str, Any]:
        with self.host.lock:
            self.host.stats_calls += 1
        stats: Dict[str, Any] = {"state.state": 1, "state.reason": 1, "cpu.time": vm.cpu_ns,
                                 "balloon.current": 65536, "vcpu.current": 1, "vcpu.maximum": 1,
                                 "net.count": 0, "block.count": 1, "block.0.name": "vda",
                                 "block.0.path": "/img/%s.qcow2" % vm.name}
        if not vm.job.acquire(blocking=not flags & NOWAIT):
            return stats  # NOWAIT and the job is held: what libvirtd has without the monitor
        try:
            delay, vm.delay_s = vm.delay_s, 0.0
            time.sleep(self.host.work_s + delay)
            while not vm.answering.wait(0.01):  # a stopped QEMU: the call waits here, holding the job
                if self.host.broken:
                    raise libvirt.libvirtError("Cannot recv data: Connection reset by peer")
            stats.update({"block.0.rd.reqs": 1, "block.0.allocation": 0, "block.0.capacity": 1 << 30})
            return stats
        finally:
            vm.job.release()


def _no_domain() -> libvirt.libvirtError:
    e = libvirt.libvirtError("no domain")
    e.err = (libvirt.VIR_ERR_NO_DOMAIN, 0, "Domain not found", 2, None, None, None, 0, 0)
    return e


@pytest.fixture
def host(monkeypatch: pytest.MonkeyPatch) -> FakeHost:
    h = FakeHost(6)
    monkeypatch.setattr(libvirt, "openReadOnly", h.open)
    return h


@contextlib.contextmanager
def connected(lanes: int = 3, **kw: Any) -> Iterator[Connection]:
    conn = Connection("fake:///", lanes=lanes, **kw)
    conn.start(wait_s=5.0)
    assert conn.up
    try:
        yield conn
    finally:
        conn.stop()


def warm_up(stats: stuck.StuckAwareStats, n: int = 4) -> None:
    for _ in range(n):
        stats.collect(time.monotonic() + 5.0)
    assert stats.typical_s() is not None


def complete_uuids(result: stuck.StatsResult) -> set:
    from virt_exporter.source import bulk

    return {u for _d, u, _n, s in result.raw if not bulk.incomplete_groups(s, GROUPS)}


# --- stuck domains ---------------------------------------------------------------------------------


def test_a_stuck_domain_costs_one_soft_deadline_then_nothing(host: FakeHost) -> None:
    with connected() as conn:
        stats = stuck.StuckAwareStats(conn, GROUPS, True, concurrency=2)
        warm_up(stats)
        vm = list(host.vms.values())[2]
        others = set(host.vms) - {vm.uuid}
        host.stop_qemu(vm)
        try:
            t0 = time.monotonic()
            first = stats.collect(time.monotonic() + 5.0)
            first_s = time.monotonic() - t0
            # late at SOFT_DEADLINE_MIN_S (the fake's calls take milliseconds), then a NOWAIT retry
            assert first_s < stuck.SOFT_DEADLINE_MIN_S + 0.5, first_s
            assert vm.uuid in first.unresponsive
            assert complete_uuids(first) == others
            assert stats.suspects() == {vm.uuid}
            for _ in range(5):
                t0 = time.monotonic()
                again = stats.collect(time.monotonic() + 5.0)
                assert time.monotonic() - t0 < 0.2  # captured: NOWAIT answers for it at once
                assert again.unresponsive == {vm.uuid}
                assert complete_uuids(again) == others
                # still in the calls, partially: state, cpu, balloon are fresh
                partial = {u: s for _d, u, _n, s in again.raw}[vm.uuid]
                assert "cpu.time" in partial and "block.0.rd.reqs" not in partial
            assert conn.tainted_lanes == 1  # the one call that reached the stopped QEMU
        finally:
            host.cont_qemu(vm)
        deadline = time.monotonic() + 2.0
        while stats.suspects() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not stats.suspects()
        after = stats.collect(time.monotonic() + 5.0)
        assert not after.unresponsive and complete_uuids(after) == set(host.vms)
        assert host.wrong_connection == 0


def test_a_suspect_whose_captor_failed_is_set_apart_and_probed(host: FakeHost) -> None:
    with connected() as conn:
        stats = stuck.StuckAwareStats(conn, GROUPS, True, concurrency=2)
        warm_up(stats)
        vm = list(host.vms.values())[1]
        host.stop_qemu(vm)
        try:
            stats.collect(time.monotonic() + 5.0)
            assert stats.suspects() == {vm.uuid}
            # The call holding the domain's job fails (its connection was lost): nobody holds it now,
            # so a scrape's call could block on the stopped QEMU again. The prober asks it instead,
            # and its probe, blocking, holds the job from then on.
            host.broken = True
            time.sleep(0.1)
            host.broken = False
            for _ in range(5):
                t0 = time.monotonic()
                result = stats.collect(time.monotonic() + 5.0)
                assert time.monotonic() - t0 < 0.3
                assert result.unresponsive == {vm.uuid}
                assert complete_uuids(result) == set(host.vms) - {vm.uuid}
                time.sleep(0.05)
        finally:
            host.cont_qemu(vm)
        deadline = time.monotonic() + 3.0
        while stats.suspects() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not stats.suspects()


def test_a_domain_set_apart_stays_in_the_sample_that_left_it_out(host: FakeHost) -> None:
    """Set apart when the sample starts and cleared by a probe while it runs: still reported (its
    state, flagged) by that sample, neither dropped nor left as a bare UUID."""
    with connected() as conn:
        stats = stuck.StuckAwareStats(conn, GROUPS, True, concurrency=2)
        warm_up(stats)
        vm = list(host.vms.values())[0]
        with stats._lock:
            stats._suspects[vm.uuid] = stuck._Suspect(vm.name, {"state.state": 1, "state.reason": 1},
                                                      [], time.monotonic() + 60)
        host.work_s = 0.05
        threading.Timer(0.05, stats.forget, args=(vm.uuid,)).start()
        result = stats.collect(time.monotonic() + 5.0)
        entries = {u: (n, s) for _d, u, n, s in result.raw}
        assert entries[vm.uuid] == (vm.name, {"state.state": 1, "state.reason": 1})
        assert result.unresponsive == {vm.uuid}
        assert not stats.suspects()
        again = stats.collect(time.monotonic() + 5.0)
        assert not again.unresponsive and complete_uuids(again) == set(host.vms)


def test_two_stuck_domains_in_one_share(host: FakeHost) -> None:
    with connected() as conn:
        stats = stuck.StuckAwareStats(conn, GROUPS, True, concurrency=1)
        warm_up(stats)
        a, b = list(host.vms.values())[1:3]
        host.stop_qemu(a)
        host.stop_qemu(b)
        try:
            t0 = time.monotonic()
            first = stats.collect(time.monotonic() + 5.0)
            assert time.monotonic() - t0 < 4 * stuck.SOFT_DEADLINE_MIN_S + 0.5
            assert {a.uuid, b.uuid} <= first.unresponsive
            assert complete_uuids(first) == set(host.vms) - {a.uuid, b.uuid}
            t0 = time.monotonic()
            again = stats.collect(time.monotonic() + 5.0)
            assert time.monotonic() - t0 < 0.2
            assert again.unresponsive == {a.uuid, b.uuid}
        finally:
            host.cont_qemu(a)
            host.cont_qemu(b)


def test_a_slow_call_is_waited_for_not_flagged(host: FakeHost) -> None:
    with connected() as conn:
        stats = stuck.StuckAwareStats(conn, GROUPS, True, concurrency=2)
        warm_up(stats)
        vm = list(host.vms.values())[0]
        # Slow enough to be late (min soft deadline), quick enough to answer within the retry + grace.
        vm.delay_s = stuck.SOFT_DEADLINE_MIN_S + 0.01
        result = stats.collect(time.monotonic() + 5.0)
        assert not result.unresponsive
        assert complete_uuids(result) == set(host.vms)
        time.sleep(0.05)
        assert not stats.suspects()


def test_a_job_held_by_another_client_is_asked_again(host: FakeHost) -> None:
    with connected() as conn:
        stats = stuck.StuckAwareStats(conn, GROUPS, True, concurrency=2)
        warm_up(stats)
        vm = list(host.vms.values())[4]
        host.hold_job(vm, 0.02)
        result = stats.collect(time.monotonic() + 5.0)
        assert not result.unresponsive, "a moment's job held elsewhere must not flag the domain"
        assert not stats.suspects()


def test_hung_libvirtd_fails_the_sample_within_the_deadline(host: FakeHost) -> None:
    with connected() as conn:
        stats = stuck.StuckAwareStats(conn, GROUPS, True, concurrency=2)
        warm_up(stats)
        host.alive.clear()
        try:
            t0 = time.monotonic()
            with pytest.raises((CallTimeout, LibvirtUnavailable)):
                stats.collect(time.monotonic() + 1.5)
            assert time.monotonic() - t0 < 1.5 + 0.2
            # every lane is now held by a call libvirtd does not answer: the next fails at once
            t0 = time.monotonic()
            with pytest.raises((CallTimeout, LibvirtUnavailable)):
                stats.collect(time.monotonic() + 1.5)
            assert time.monotonic() - t0 < 1.5 + 0.2
        finally:
            host.alive.set()
        deadline = time.monotonic() + 3.0
        while conn.tainted_lanes and time.monotonic() < deadline:
            time.sleep(0.01)
        result = stats.collect(time.monotonic() + 5.0)
        assert complete_uuids(result) == set(host.vms)


def test_a_libvirtd_stall_is_waited_out_not_retried(host: FakeHost) -> None:
    """Every call slow because libvirtd itself is (it holds domain locks while it starts or destroys
    a domain; its workers are busy): the ping sent for the slow calls is slow too, so no share is
    asked again — that would only add load — and the sample is complete once libvirtd moves on."""
    with connected() as conn:
        stats = stuck.StuckAwareStats(conn, GROUPS, True, concurrency=2)
        warm_up(stats)
        host.alive.clear()
        threading.Timer(stuck.SOFT_DEADLINE_MIN_S + 0.5, host.alive.set).start()
        result = stats.collect(time.monotonic() + 5.0)
        assert result.counts["pings"] >= 1 and result.counts["retries"] == 0, result.counts
        assert complete_uuids(result) == set(host.vms) and not result.unresponsive


def test_first_sample_has_only_the_hard_deadline(host: FakeHost) -> None:
    with connected() as conn:
        stats = stuck.StuckAwareStats(conn, GROUPS, True, concurrency=2)
        vm = list(host.vms.values())[0]
        host.stop_qemu(vm)
        try:
            t0 = time.monotonic()
            result = stats.collect(time.monotonic() + 1.0)
            took = time.monotonic() - t0
            assert 0.9 < took < 1.3
            # the share without the stopped QEMU answered
            assert vm.uuid not in complete_uuids(result) and complete_uuids(result)
        finally:
            host.cont_qemu(vm)


def test_a_removed_suspect_is_forgotten(host: FakeHost) -> None:
    with connected() as conn:
        stats = stuck.StuckAwareStats(conn, GROUPS, True, concurrency=2)
        warm_up(stats)
        vm = list(host.vms.values())[3]
        host.stop_qemu(vm)
        try:
            stats.collect(time.monotonic() + 5.0)
            assert stats.suspects() == {vm.uuid}
            stats.forget(vm.uuid)
            assert not stats.suspects()
        finally:
            host.cont_qemu(vm)


def test_shares_are_fixed_by_uuid() -> None:
    uuids = ["%08x-0000-4000-8000-%012x" % (i, i) for i in range(200)]
    shares = [stuck.share_of(u, 4) for u in uuids]
    assert shares == [stuck.share_of(u, 4) for u in uuids]
    assert all(20 < shares.count(i) < 80 for i in range(4))
    spec = stuck.Spec(share=(1, 4), exclude=frozenset(uuids[:10]))
    assert not any(spec.covers(u) for u in uuids[:10])
    assert all(spec.covers(u) == (stuck.share_of(u, 4) == 1) for u in uuids[10:])


# --- lanes -----------------------------------------------------------------------------------------


def test_calls_run_on_the_lane_they_were_given(host: FakeHost) -> None:
    with connected() as conn:
        stats = stuck.StuckAwareStats(conn, GROUPS, True, concurrency=3)
        for _ in range(3):
            stats.collect(time.monotonic() + 5.0)
        assert host.wrong_connection == 0


def test_cheap_calls_use_the_primary_lane_stats_calls_never(host: FakeHost) -> None:
    with connected() as conn:
        primary = conn._lanes[0].conn
        seen = []
        conn.call(lambda c: seen.append(("cheap", c is primary)), 1.0, cheap=True)
        conn.call(lambda c: seen.append(("stats", c is primary)), 1.0)
        assert seen == [("cheap", True), ("stats", False)]


def test_an_abandoned_call_taints_its_lane_and_a_spare_is_opened(host: FakeHost) -> None:
    with connected(lanes=2) as conn:
        release = threading.Event()
        blocked = conn.submit(lambda c: release.wait(5.0) and c)
        blocked_conn = blocked.lane.conn
        with pytest.raises(CallTimeout):
            conn.call(lambda c: release.wait(5.0), 0.05)  # goes elsewhere, times out, is abandoned
        conn.abandon(blocked)
        deadline = time.monotonic() + 2.0
        while conn.lanes < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert conn.tainted_lanes == 2
        for _ in range(10):
            assert conn.call(lambda c: c, 1.0) is not blocked_conn
        release.set()
        deadline = time.monotonic() + 2.0
        while conn.tainted_lanes and time.monotonic() < deadline:
            time.sleep(0.01)
        assert conn.tainted_lanes == 0


def test_no_lane_is_opened_on_the_callers_path(host: FakeHost) -> None:
    with connected(lanes=2, max_lanes=3) as conn:
        release = threading.Event()
        try:
            futures = []
            for _ in range(2):
                f = conn.submit(lambda c: release.wait(5.0))
                conn.abandon(f)
                futures.append(f)
            host.alive.clear()  # an open would now block
            t0 = time.monotonic()
            with pytest.raises(LibvirtUnavailable):
                conn.submit(lambda c: None)
            assert time.monotonic() - t0 < 0.1
            assert conn.submit(lambda c: "cheap", cheap=True).result(1.0) == "cheap"
        finally:
            host.alive.set()
            release.set()


def test_connection_to_the_test_driver() -> None:
    """The real binding (libvirt's in-process test driver): lanes are separate virConnects."""
    conn = Connection("test:///default", lanes=3)
    conn.start(wait_s=5.0)
    try:
        assert conn.up and conn.lanes == 4  # primary, two stats lanes, one spare
        names = conn.call(lambda c: sorted(d.name() for d in c.listAllDomains(0)), 5.0, cheap=True)
        assert names == ["test"]
        raw = conn.call(lambda c: c.getAllDomainStats(libvirt.VIR_DOMAIN_STATS_STATE, NOWAIT), 5.0)
        assert [d.name() for d, _s in raw] == ["test"]
        stats = stuck.StuckAwareStats(conn, ["state"], False, concurrency=2)
        result = stats.collect(time.monotonic() + 5.0)
        assert [n for _d, _u, n, _s in result.raw] == ["test"] and not result.unresponsive
    finally:
        conn.stop()


# --- the sampler: single flight, rates across restarts and outages -----------------------------------


def make_sample(t: float, domains: Dict[str, Dict[str, Any]], ids: Dict[str, int], up: bool = True) -> Sample:
    return Sample(wall_time_s=t, monotonic_s=t, up=up,
                  domains={u: DomainStats(uuid=u, name=u, stats=s) for u, s in domains.items()},
                  domain_ids=ids)


RUNNING = {"state.state": 1}


def test_previous_keeps_domains_whose_counters_prove_it() -> None:
    prev = make_sample(100.0, {"a": dict(RUNNING, **{"cpu.time": 10}), "b": dict(RUNNING, **{"cpu.time": 10})},
                       {"a": 1, "b": 2})
    cur = make_sample(115.0, {"a": dict(RUNNING, **{"cpu.time": 20}), "b": dict(RUNNING, **{"cpu.time": 30})},
                      {"a": 1, "b": 2})
    assert comparable_previous(prev, cur) is prev


def test_previous_drops_a_restarted_domain() -> None:
    prev = make_sample(100.0, {"a": dict(RUNNING, **{"cpu.time": 10}), "b": dict(RUNNING, **{"cpu.time": 10})},
                       {"a": 1, "b": 2})
    # b restarted (new ID) and has run longer since than before: its cpu.time grew all the same
    cur = make_sample(115.0, {"a": dict(RUNNING, **{"cpu.time": 20}), "b": dict(RUNNING, **{"cpu.time": 50})},
                      {"a": 1, "b": 7})
    kept = comparable_previous(prev, cur)
    assert kept is not None and set(kept.domains) == {"a"}
    # without IDs, a cpu.time that went backwards tells it
    cur = make_sample(115.0, {"a": dict(RUNNING, **{"cpu.time": 20}), "b": dict(RUNNING, **{"cpu.time": 5})}, {})
    kept = comparable_previous(prev, cur)
    assert kept is not None and set(kept.domains) == {"a"}


def test_previous_across_an_outage() -> None:
    prev = make_sample(100.0, {"a": dict(RUNNING, **{"cpu.time": 10})}, {"a": 1})
    short = make_sample(130.0, {"a": dict(RUNNING, **{"cpu.time": 40})}, {"a": 1})
    assert comparable_previous(prev, short) is prev
    long = make_sample(100.0 + sampler_mod.PREVIOUS_MAX_GAP_S + 1, {"a": dict(RUNNING, **{"cpu.time": 99})},
                       {"a": 1})
    assert comparable_previous(prev, long) is None
    assert comparable_previous(None, short) is None


@dataclasses.dataclass
class _Clock:
    t: float = 1000.0

    def __call__(self) -> float:
        return self.t


def test_sampler_keeps_the_last_good_sample_across_a_failed_one(host: FakeHost) -> None:
    with connected() as conn:
        s = Sampler(conn, DomainXMLCache(), SamplerOptions(groups=GROUPS, min_interval_s=0.0, concurrency=2))
        _p, first = s.get()
        assert first.up and len(first.domains) == 6
        host.alive.clear()
        try:
            prev, failed = s.get(0.5)
            assert not failed.up and prev is None
        finally:
            host.alive.set()
        deadline = time.monotonic() + 3.0
        while conn.tainted_lanes and time.monotonic() < deadline:
            time.sleep(0.01)
        prev, again = s.get()
        assert again.up and prev is first  # rates go on across the failed sample
        assert again.domain_ids == {vm.uuid: vm.id for vm in host.vms.values()}
        s.stop()


def test_concurrent_scrapes_share_one_sample(host: FakeHost) -> None:
    host.work_s = 0.02
    with connected() as conn:
        s = Sampler(conn, DomainXMLCache(), SamplerOptions(groups=GROUPS, min_interval_s=1.0, concurrency=2))
        s.get()
        time.sleep(1.05)
        before = s.samples_total
        with ThreadPoolExecutor(20) as pool:
            pairs = list(pool.map(lambda _i: s.get(), range(20)))
        assert s.samples_total == before + 1
        assert len({id(cur) for _p, cur in pairs}) == 1
        assert all(prev is not None for prev, _c in pairs)
        s.stop()


def test_a_domain_stopped_during_a_sample_leaves_it(host: FakeHost) -> None:
    host.work_s = 0.05
    with connected() as conn:
        s = Sampler(conn, DomainXMLCache(), SamplerOptions(groups=GROUPS, min_interval_s=0.0, concurrency=1))
        s.get()
        vm = list(host.vms.values())[0]
        threading.Timer(0.1, s._on_lifecycle, args=(vm.uuid, libvirt.VIR_DOMAIN_EVENT_STOPPED, 0)).start()
        _p, cur = s.get()  # its stats were read before the event said the domain stopped
        assert vm.uuid not in cur.domains
        s.stop()
