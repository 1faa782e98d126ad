"""source.stuck: stuck domains, late calls, suspects, a hung libvirtd — against the scripted libvirtd
of tests/fakelibvirt.py.

The fake keeps the semantics measured on the test bed (testbed.md), which are what the mechanism is
built on: one job per domain; a stats call takes each domain's job in turn, and with NOWAIT skips a
domain whose job is held, returning it partial (block counters missing); a stopped QEMU keeps the
job of the call that reached it until it answers again; a ``virDomain`` belongs to the connection it
was listed on. The real thing (SIGSTOP on a QEMU, on libvirtd) is in tests/integration/test_fault_*.
"""

from __future__ import annotations

import threading
import time
from typing import Callable

import libvirt
import pytest

from bounds import wait_for
from fakelibvirt import FakeHost, connected, libvirt_error
from virt_exporter.source import bulk, stuck
from virt_exporter.source.connection import CallTimeout, LibvirtUnavailable

GROUPS = list(bulk.GROUP_FLAGS)
NOWAIT = libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_NOWAIT
TEST_BOUND_S = 30
pytestmark = pytest.mark.timeout(TEST_BOUND_S)


class StepClock:
    """time.monotonic, moved forward by the test (a wait that took long, without waiting)."""

    def __init__(self) -> None:
        self.offset_s = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.offset_s

    def advance(self, seconds: float) -> None:
        self.offset_s += seconds


def warm_up(stats: stuck.StuckAwareStats, n: int = 4, clock: Callable[[], float] = time.monotonic) -> None:
    for _ in range(n):
        stats.collect(clock() + 5.0)
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
            first = stats.collect(time.monotonic() + 5.0)
            # the call that reached it is late and its share asked again with NOWAIT (the other
            # share's call may be late too on a loaded host: at most one per share)
            assert 1 <= first.counts["late"] == first.counts["retries"] <= 2, first.counts
            assert vm.uuid in first.unresponsive
            assert complete_uuids(first) == others
            assert stats.suspects() == {vm.uuid}
            assert vm.calls_blocked == 1
            for _ in range(5):
                again = stats.collect(time.monotonic() + 5.0)
                assert vm.calls_blocked == 1  # captured: NOWAIT answers for it at once, no call waits on it
                assert again.unresponsive == {vm.uuid}
                assert complete_uuids(again) == others
                # still in the calls, partially: state, cpu, balloon are fresh
                partial = {u: s for _d, u, _n, s in again.raw}[vm.uuid]
                assert "cpu.time" in partial and "block.0.rd.reqs" not in partial
            assert conn.tainted_lanes == 1  # the one call that reached the stopped QEMU
        finally:
            host.cont_qemu(vm)
        wait_for(lambda: not stats.suspects(), 5.0, "the suspect cleared", 0.01)
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
            wait_for(lambda: host.calls_lost, 5.0, "the captor's call failed", 0.01)
            host.broken = False
            # (the prober asks only suspects set apart, none its captor still holds)
            wait_for(lambda: vm.calls_blocked == 2 and vm.job.locked(), 5.0, "the probe holding the job", 0.01)
            for _ in range(5):
                result = stats.collect(time.monotonic() + 5.0)
                assert result.unresponsive == {vm.uuid}
                assert complete_uuids(result) == set(host.vms) - {vm.uuid}
            assert vm.calls_blocked == 2  # no scrape's call reached the stopped QEMU
        finally:
            host.cont_qemu(vm)
        wait_for(lambda: not stats.suspects(), 5.0, "the suspect cleared", 0.01)


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
        # cleared while the sample runs: as soon as the fake has read any domain's stats
        host.after_stats = lambda _read: stats.forget(vm.uuid)
        result = stats.collect(time.monotonic() + 5.0)
        host.after_stats = None
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
            first = stats.collect(time.monotonic() + 5.0)
            assert 1 <= first.counts["retries"] <= 2, first.counts  # one per share holding a stopped QEMU
            assert {a.uuid, b.uuid} <= first.unresponsive
            assert complete_uuids(first) == set(host.vms) - {a.uuid, b.uuid}
            assert (a.calls_blocked, b.calls_blocked) == (1, 1)
            again = stats.collect(time.monotonic() + 5.0)
            assert (a.calls_blocked, b.calls_blocked) == (1, 1)  # captured: no call waits on them again
            assert again.unresponsive == {a.uuid, b.uuid}
        finally:
            host.cont_qemu(a)
            host.cont_qemu(b)


def test_a_slow_call_is_waited_for_not_flagged(host: FakeHost) -> None:
    with connected() as conn:
        stats = stuck.StuckAwareStats(conn, GROUPS, True, concurrency=2)
        warm_up(stats)
        vm = list(host.vms.values())[0]
        # Late for sure, however fast or slow the host: its QEMU answers only once its share was
        # asked again (the NOWAIT retry found its job held), i.e. right after the call was judged late.
        vm.answer_after_retry = threading.Event()
        result = stats.collect(time.monotonic() + 5.0)
        assert vm.answer_after_retry.is_set() and result.counts["late"] >= 1, (
            "the slow call was never judged late: this test shows nothing", result.counts)
        vm.answer_after_retry = None
        assert not result.unresponsive
        assert complete_uuids(result) == set(host.vms)
        assert not stats.suspects()


def test_a_job_held_by_another_client_is_asked_again(host: FakeHost) -> None:
    with connected() as conn:
        stats = stuck.StuckAwareStats(conn, GROUPS, True, concurrency=2)
        warm_up(stats)
        vm = list(host.vms.values())[4]
        host.hold_job_until_retry(vm)
        result = stats.collect(time.monotonic() + 5.0)
        assert not vm.release_job_on_retry, "no call met the held job: this test shows nothing"
        assert not result.unresponsive, "a moment's job held elsewhere must not flag the domain"
        assert complete_uuids(result) == set(host.vms)
        assert not stats.suspects()


def test_hung_libvirtd_fails_the_sample_within_the_deadline(host: FakeHost) -> None:
    with connected() as conn:
        stats = stuck.StuckAwareStats(conn, GROUPS, True, concurrency=2)
        warm_up(stats)
        host.alive.clear()
        try:
            with pytest.raises((CallTimeout, LibvirtUnavailable)):
                stats.collect(time.monotonic() + 1.5)
            # the ping libvirtd did not answer is still out: the next sample fails at once, waiting
            # for nothing
            with pytest.raises(CallTimeout, match="libvirtd has not answered for"):
                stats.collect(time.monotonic() + 1.5)
        finally:
            host.alive.set()
        wait_for(lambda: not conn.tainted_lanes, 5.0, "the lanes back", 0.01)
        result = stats.collect(time.monotonic() + 5.0)
        assert complete_uuids(result) == set(host.vms)


def test_a_libvirtd_stall_is_waited_out_not_retried(host: FakeHost) -> None:
    """Every call slow because libvirtd itself is (it holds domain locks while it starts or destroys
    a domain; its workers are busy): the ping sent for the slow calls is slow too, so no share is
    asked again — that would only add load — and the sample is complete once libvirtd moves on."""
    clock = StepClock()
    with connected() as conn:
        stats = stuck.StuckAwareStats(conn, GROUPS, True, concurrency=2, clock=clock)
        warm_up(stats, clock=clock)

        def stall_answers_the_ping() -> None:
            # libvirtd moves on only once asked whether it is slow, and takes its time over that
            clock.advance(1.0)  # well over stuck.PING_QUICK_S
            host.alive.set()

        host.on_ping = stall_answers_the_ping
        host.alive.clear()
        result = stats.collect(clock() + 5.0)
        host.on_ping = None
        assert host.alive.is_set(), "libvirtd never pinged: no call was judged slow"
        assert result.counts["pings"] >= 1 and result.counts["retries"] == 0, result.counts
        assert complete_uuids(result) == set(host.vms) and not result.unresponsive


def test_a_ping_answered_with_an_error_judges_no_call_late(host: FakeHost) -> None:
    """A ping libvirtd answers with an error does not show that libvirtd answers at once: the slow
    call is not judged late, no share is asked again (the sample waits out its deadline), and only
    the one call reached the stopped QEMU."""
    with connected() as conn:
        stats = stuck.StuckAwareStats(conn, GROUPS, True, concurrency=2)
        warm_up(stats)
        vm = list(host.vms.values())[2]

        def refuse() -> None:
            raise libvirt_error(libvirt.VIR_ERR_INTERNAL_ERROR)

        host.on_ping = refuse
        host.stop_qemu(vm)
        try:
            result = stats.collect(time.monotonic() + 2.0)
        finally:
            host.on_ping = None
            host.cont_qemu(vm)
        assert result.counts["pings"] >= 1, "no call was slow enough to ping for: this test shows nothing"
        assert result.counts["late"] == result.counts["retries"] == 0, result.counts
        assert vm.uuid not in complete_uuids(result) and vm.calls_blocked == 1


def test_first_sample_has_only_the_hard_deadline(host: FakeHost) -> None:
    with connected() as conn:
        stats = stuck.StuckAwareStats(conn, GROUPS, True, concurrency=2)
        vm = list(host.vms.values())[0]
        host.stop_qemu(vm)
        try:
            result = stats.collect(time.monotonic() + 1.0)
            # nothing known of a typical call yet: no call is judged late before the hard deadline
            assert result.counts["late"] == 0 and result.counts["retries"] == 0, result.counts
            # the share without the stopped QEMU answered
            assert vm.uuid not in complete_uuids(result) and complete_uuids(result)
        finally:
            host.cont_qemu(vm)
        # The same stopped QEMU once a typical call is known: judged late before the hard deadline.
        wait_for(lambda: not stats.suspects(), 5.0, "the suspect cleared", 0.01)
        warm_up(stats)
        host.stop_qemu(vm)
        try:
            known = stats.collect(time.monotonic() + 5.0)
            assert known.counts["late"] >= 1 and vm.uuid in known.unresponsive, known.counts
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


