"""collectors.cpu_usage: what is exported on the first sample, in steady state, and for a new domain."""

from __future__ import annotations

import pytest

from samples import cpu_sample, named
from virt_exporter.collectors import cpu_usage
from virt_exporter.collectors.base import ScrapeContext
from virt_exporter.sample import NodeInfo

NODE = NodeInfo(cpus=2, core_mhz=2445, model="x86_64")


def _collect(previous, current):
    out = {}
    for fam in cpu_usage.collect(ScrapeContext(current=current, previous=previous, domain_info={})):
        for s in fam.samples:
            out[(s.name, tuple(s.labels.values()))] = s.value
    return out


def test_first_scrape_has_capacity_but_no_mhz():
    m = _collect(None, cpu_sample(10.0, named(a=5), 10, 100, node=NODE))
    assert m == {("libvirt_host_cpu_core_mhz", ()): 2445, ("libvirt_host_cpu_capacity_mhz", ()): 4890}


def test_steady_state_and_new_domain():
    prev = cpu_sample(10.0, named(a=0), 0, 0, node=NODE)
    cur = cpu_sample(14.0, named(a=2_000_000_000, new=1_000_000_000), 300, 800, node=NODE)
    m = _collect(prev, cur)
    assert m[("libvirt_domain_cpu_usage_mhz", ("a",))] == pytest.approx(2445 * 0.5)
    assert ("libvirt_domain_cpu_usage_mhz", ("new",)) not in m
    assert m[("libvirt_host_cpu_usage_mhz", ())] == pytest.approx(4890 * 300 / 800)
    assert ("libvirt_host_hypervisor_overhead_mhz", ()) not in m
    nxt = cpu_sample(18.0, named(a=4_000_000_000, new=1_000_000_000), 700, 1600, node=NODE)
    m = _collect(cur, nxt)
    assert m[("libvirt_domain_cpu_usage_mhz", ("new",))] == 0.0
    assert m[("libvirt_host_hypervisor_overhead_mhz", ())] == pytest.approx(4890 * 400 / 800 - 2445 * 0.5)
