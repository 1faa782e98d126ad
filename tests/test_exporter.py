"""virt_exporter/exporter.py on its own: one scrape over a stub sampler that hands out the samples the
test sets, with the real collectors (each wrapped to record that it ran). A collector that raises is
reported and the scrape goes on; with libvirt down only the collectors that have something true to
say without it run."""

from __future__ import annotations

import dataclasses
import logging
from typing import Dict, List, Optional, Tuple

import pytest
from prometheus_client.exposition import generate_latest

from samples import cpu_sample, named, sample
from scrape import Series
from scrape import series as parse_series
from virt_exporter.collectors import base, load_all
from virt_exporter.exporter import Exporter
from virt_exporter.sample import HostFacts, Sample
from virt_exporter.snapshot import Snapshot

# What a host collector can tell without libvirt: the facts of the last connection.
FACTS = HostFacts(hostname="hv1", libvirt_version="9.0.0", hypervisor_version="7.2.0", cpu_model="Xeon")
# Written out, not read from the exporter: the collectors that still run while libvirt is down (host
# identity as of the last connection, the perfmon engine's own state); every other one needs a sample.
RUN_WITHOUT_LIBVIRT = {"host", "perfmon"}

class StubSampler:
    """What the Exporter asks of a sampler: one published snapshot. No libvirt."""

    def __init__(self, previous: Optional[Sample], current: Sample) -> None:
        self.published = Snapshot(current=current, previous=previous)

    def snapshot(self, timeout_s: Optional[float] = None) -> Snapshot:
        return self.published


def recording(specs: List[base.CollectorSpec], ran: List[str],
              raising: str = "") -> List[base.CollectorSpec]:
    """The specs with their collect wrapped: the name goes to ``ran``; ``raising`` raises instead."""

    def wrap(spec: base.CollectorSpec) -> base.CollectorSpec:
        def collect(ctx: base.ScrapeContext):
            ran.append(spec.name)
            if spec.name == raising:
                raise ZeroDivisionError("broken on purpose")
            return list(spec.collect(ctx))
        return dataclasses.replace(spec, collect=collect)

    return [wrap(s) for s in specs]


def all_specs() -> List[base.CollectorSpec]:
    load_all()
    return list(base.REGISTRY.values())


def scrape(exporter: Exporter) -> Series:
    return parse_series(generate_latest(exporter.scrape()).decode())   # what the HTTP handler encodes


def per_collector(series: Series, name: str) -> Dict[str, float]:
    return {dict(labels)["collector"]: v for (n, labels), v in series.items() if n == name}


def good_pair() -> Tuple[Sample, Sample]:
    """Two good samples of one domain, with the listings read (a host without storage pools)."""
    listed = dict(host=FACTS, autostart=frozenset(), persistent=frozenset({"web"}), storage_pools=())
    previous = dataclasses.replace(cpu_sample(100.0, named(web=0), busy=0, total=1000), **listed)
    current = dataclasses.replace(cpu_sample(115.0, named(web=15 * 10**9), busy=500, total=2000), **listed)
    return previous, current


def test_a_collector_that_raises_is_counted_and_the_scrape_goes_on(caplog):
    ran: List[str] = []
    specs = recording(all_specs(), ran, raising="domain")
    exporter = Exporter(StubSampler(*good_pair()), specs, options={})
    with caplog.at_level(logging.ERROR, logger="virt_exporter.exporter"):
        first = scrape(exporter)
        second = scrape(exporter)

    assert first[("libvirt_up", ())] == 1
    success = per_collector(first, "libvirt_exporter_collector_success")
    assert success["domain"] == 0
    assert {n for n, ok in success.items() if ok == 1} == {s.name for s in specs} - {"domain"}
    assert per_collector(first, "libvirt_exporter_collector_errors_total")["domain"] == 1
    assert per_collector(second, "libvirt_exporter_collector_errors_total")["domain"] == 2
    assert set(per_collector(second, "libvirt_exporter_collector_errors_total").values()) == {0, 2}
    # The scrape went on: every collector ran, those after the broken one still print their series.
    assert ran[:len(specs)] == [s.name for s in specs]
    assert first[("libvirt_domain_cpu_seconds_total", (("domain", "web"),))] == 15
    assert not any(n == "libvirt_domain_info" for n, _l in first), "the broken collector's family leaked"
    errors = [r for r in caplog.records if "domain" in r.getMessage()]
    assert len(errors) == 2 and all(r.exc_info for r in errors), "want one logged traceback per failed scrape"


def test_with_libvirt_down_only_the_collectors_that_need_no_libvirt_run():
    previous, current = good_pair()
    down = sample(current.monotonic_s + 15, wall_time_s=current.wall_time_s + 15, up=False,
                  host=FACTS, error="libvirt: connection refused")
    ran: List[str] = []
    specs = recording(all_specs(), ran)
    assert RUN_WITHOUT_LIBVIRT <= {s.name for s in specs}
    series = scrape(Exporter(StubSampler(None, down), specs, options={}))

    assert series[("libvirt_up", ())] == 0
    assert set(ran) == RUN_WITHOUT_LIBVIRT
    success = per_collector(series, "libvirt_exporter_collector_success")
    assert {n for n, ok in success.items() if ok == 1} == RUN_WITHOUT_LIBVIRT
    assert set(success) == {s.name for s in specs}, "every enabled collector is reported, run or not"
    info = [dict(labels) for n, labels in series if n == "libvirt_host_info"]
    assert info == [{"hostname": "hv1", "libvirt_version": "9.0.0", "hypervisor_version": "7.2.0",
                     "cpu_model": "Xeon"}]
    assert not [n for n, labels in series if dict(labels).get("domain")], "domain series without libvirt"
    # The same collectors all run once libvirt answers again.
    ran.clear()
    scrape(Exporter(StubSampler(*good_pair()), specs, options={}))
    assert set(ran) == {s.name for s in specs}


@pytest.mark.parametrize("raising", ["host", "cpu"])
def test_errors_total_is_per_collector(raising):
    ran: List[str] = []
    exporter = Exporter(StubSampler(*good_pair()), recording(all_specs(), ran, raising=raising), options={})
    errors = per_collector(scrape(exporter), "libvirt_exporter_collector_errors_total")
    assert {n for n, v in errors.items() if v} == {raising}
