"""The sampler: single flight, previous / last-good bookkeeping across restarts and outages, domains
that stop during a sample, against the scripted libvirtd of tests/fakelibvirt.py."""

from __future__ import annotations

import dataclasses
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict

import libvirt
import pytest

from bounds import wait_for
from fakelibvirt import FakeHost, connected
from samples import sample
from virt_exporter.calc.comparable import PREVIOUS_MAX_GAP_S, comparable_previous
from virt_exporter.sample import DomainStats, Sample
from virt_exporter.sampler import Sampler, SamplerOptions
from virt_exporter.source import bulk
from virt_exporter.source.domxml import DomainXMLCache
from virt_exporter.source.reader import SampleReader

GROUPS = list(bulk.GROUP_FLAGS)
pytestmark = pytest.mark.timeout(30)


def make_sample(t: float, domains: Dict[str, Dict[str, Any]], ids: Dict[str, int], up: bool = True) -> Sample:
    return sample(t, [DomainStats(uuid=u, name=u, stats=s) for u, s in domains.items()], up=up, domain_ids=ids)


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
    long = make_sample(100.0 + PREVIOUS_MAX_GAP_S + 1, {"a": dict(RUNNING, **{"cpu.time": 99})},
                       {"a": 1})
    assert comparable_previous(prev, long) is None
    assert comparable_previous(None, short) is None


@dataclasses.dataclass
class _Clock:
    t: float = 1000.0

    def __call__(self) -> float:
        return self.t


def _sampler(conn, min_interval_s: float, concurrency: int, clock=time.monotonic) -> Sampler:
    """A sampler wired as the app wires it: lifecycle events reach it through the XML cache."""
    xml_cache = DomainXMLCache()
    sampler = Sampler(SampleReader(conn, xml_cache, GROUPS, concurrency=concurrency, clock=clock),
                      SamplerOptions(min_interval_s=min_interval_s), domain_info=xml_cache.snapshot, clock=clock)
    xml_cache.register_events(conn.on_event)
    xml_cache.subscribe(sampler.on_lifecycle)
    return sampler


def test_sampler_keeps_the_last_good_sample_across_a_failed_one(host: FakeHost) -> None:
    with connected() as conn:
        s = _sampler(conn, min_interval_s=0.0, concurrency=2)
        _p, first = s.get()
        assert first.up and len(first.domains) == 6
        host.alive.clear()
        try:
            prev, failed = s.get(0.5)
            assert not failed.up and prev is None
        finally:
            host.alive.set()
        wait_for(lambda: not conn.tainted_lanes, 5.0, "the lanes back", 0.01)
        prev, again = s.get()
        assert again.up and prev is first  # rates go on across the failed sample
        assert again.domain_ids == {vm.uuid: vm.id for vm in host.vms.values()}
        s.stop()


def test_concurrent_scrapes_share_one_sample(host: FakeHost) -> None:
    host.work_s = 0.02
    clock = _Clock()
    with connected() as conn:
        # The clock stands still but when the test moves it: every get() below falls within the
        # min-interval of the one sample they share, however slowly the threads start.
        s = _sampler(conn, min_interval_s=1.0, concurrency=2, clock=clock)
        s.get()
        assert s.get() and s.samples_total == 1, "within the min-interval the sample is reused"
        clock.t += 1.05
        before = s.samples_total
        with ThreadPoolExecutor(20) as pool:
            pairs = list(pool.map(lambda _i: s.get(), range(20)))
        assert s.samples_total == before + 1
        assert len({id(cur) for _p, cur in pairs}) == 1
        assert all(prev is not None for prev, _c in pairs)
        s.stop()


def test_a_domain_stopped_during_a_sample_leaves_it(host: FakeHost) -> None:
    with connected() as conn:
        s = _sampler(conn, min_interval_s=0.0, concurrency=1)
        vm = list(host.vms.values())[0]
        _p, cur = s.get()
        assert vm.uuid in cur.domains
        # The event arrives once the fake has read its stats, while the sample is still being taken.
        host.after_stats = lambda read: s.on_lifecycle(vm.uuid, libvirt.VIR_DOMAIN_EVENT_STOPPED, 0) \
            if read is vm else None
        _p, cur = s.get()  # its stats were read before the event said the domain stopped
        host.after_stats = None
        assert vm.uuid not in cur.domains
        s.stop()
