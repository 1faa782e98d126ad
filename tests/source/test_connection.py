"""source.connection: lanes (a call runs on the lane it was given, cheap calls on the primary one,
an abandoned call taints its lane and a spare is opened off the caller's path), against the scripted
libvirtd of tests/fakelibvirt.py, and the real connection code against libvirt's test driver."""

from __future__ import annotations

import threading
import time

import libvirt
import pytest

from bounds import finishes, wait_for
from fakelibvirt import NOWAIT, FakeHost, connected
from virt_exporter.source import bulk, stuck
from virt_exporter.source.connection import CallTimeout, Connection, LibvirtUnavailable

GROUPS = list(bulk.GROUP_FLAGS)
pytestmark = pytest.mark.timeout(30)


def test_calls_run_on_the_lane_they_were_given(host: FakeHost) -> None:
    with connected() as conn:
        stats = stuck.StuckAwareStats(conn, GROUPS, True, concurrency=3)
        for _ in range(3):
            stats.collect(time.monotonic() + 5.0)
        assert host.wrong_connection == 0


def test_cheap_calls_use_the_primary_lane_stats_calls_never(host: FakeHost) -> None:
    with connected() as conn:
        cheap = {conn.call(lambda c: c, 1.0, cheap=True) for _ in range(6)}
        stats = {conn.call(lambda c: c, 1.0) for _ in range(6)}
        assert len(cheap) == 1, "cheap calls on more than one lane"
        assert stats and not cheap & stats, "a stats call on the cheap calls' lane"


def test_an_abandoned_call_taints_its_lane_and_a_spare_is_opened(host: FakeHost) -> None:
    with connected(lanes=2) as conn:
        release = threading.Event()
        ran_on: list = []
        blocked = conn.submit(lambda c: ran_on.append(c) or release.wait(5.0))
        blocked_conn = wait_for(lambda: ran_on, 2.0, "the blocked call running", 0.01)[0]
        with pytest.raises(CallTimeout):
            conn.call(lambda c: release.wait(5.0), 0.05)  # goes elsewhere, times out, is abandoned
        conn.abandon(blocked)
        wait_for(lambda: conn.lanes >= 4, 2.0, "replacement lanes", 0.01)
        assert conn.tainted_lanes == 2
        for _ in range(10):
            assert conn.call(lambda c: c, 1.0) is not blocked_conn
        release.set()
        wait_for(lambda: conn.tainted_lanes == 0, 2.0, "the lanes back", 0.01)


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
            # refused while libvirtd still does not answer: no open on the caller's path
            with pytest.raises(LibvirtUnavailable):
                finishes(lambda: conn.submit(lambda c: None))
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
