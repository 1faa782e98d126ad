"""collectors.cpu_usage: what is exported on the first sample, in steady state, and for a new domain."""

from __future__ import annotations

import pytest

from virt_exporter.collectors import cpu_usage
from virt_exporter.collectors.base import ScrapeContext
from virt_exporter.sample import CpuTimes, DomainStats, HostCpu, NodeInfo, Sample

NODE = NodeInfo(cpus=2, core_mhz=2445, model="x86_64")


def _sample(t: float, busy: int, total: int, **cpu_ns) -> Sample:
    doms = {n: DomainStats(n, n, {"state.state": 1, "cpu.time": v}) for n, v in cpu_ns.items()}
    return Sample(wall_time_s=t, monotonic_s=t, up=True, domains=doms, node=NODE,
                  host_cpu=HostCpu(CpuTimes(0, 0, busy, total - busy, 0, 0, 0), {}))


def _collect(previous, current):
    out = {}
    for fam in cpu_usage.collect(ScrapeContext(current=current, previous=previous, domain_info={})):
        for s in fam.samples:
            out[(s.name, tuple(s.labels.values()))] = s.value
    return out


def test_first_scrape_has_capacity_but_no_mhz():
    m = _collect(None, _sample(10.0, 10, 100, a=5))
    assert m == {("libvirt_host_cpu_core_mhz", ()): 2445, ("libvirt_host_cpu_capacity_mhz", ()): 4890}


def test_steady_state_and_new_domain():
    prev = _sample(10.0, 0, 0, a=0)
    cur = _sample(14.0, 300, 800, a=2_000_000_000, new=1_000_000_000)
    m = _collect(prev, cur)
    assert m[("libvirt_domain_cpu_usage_mhz", ("a",))] == pytest.approx(2445 * 0.5)
    assert ("libvirt_domain_cpu_usage_mhz", ("new",)) not in m
    assert m[("libvirt_host_cpu_usage_mhz", ())] == pytest.approx(4890 * 300 / 800)
    assert ("libvirt_host_hypervisor_overhead_mhz", ()) not in m
    nxt = _sample(18.0, 700, 1600, a=4_000_000_000, new=1_000_000_000)
    m = _collect(cur, nxt)
    assert m[("libvirt_domain_cpu_usage_mhz", ("new",))] == 0.0
    assert m[("libvirt_host_hypervisor_overhead_mhz", ())] == pytest.approx(4890 * 400 / 800 - 2445 * 0.5)
