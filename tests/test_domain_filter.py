"""--libvirt.domain-include / -exclude: which domains are exported, and that the host's hypervisor
overhead still accounts for the ones that are not."""

from __future__ import annotations

import re
from typing import Iterable

import pytest

from samples import cpu_sample, named
from virt_exporter.collectors import cpu_usage
from virt_exporter.collectors.base import ScrapeContext
from virt_exporter.domain_filter import DomainFilter, compile_pattern
from virt_exporter.sample import Sample


def _sample(t: float, busy: int, total: int, unresponsive: Iterable[str] = (), **cpu_ns: int) -> Sample:
    """Domains "u-<name>" with QEMU pids 100, 101, ..."""
    return cpu_sample(t, named("u-", **cpu_ns), busy, total, pids={"u-" + n: 100 + i for i, n in enumerate(cpu_ns)},
                      unresponsive=unresponsive)


@pytest.mark.parametrize("include,exclude,kept", [
    (None, None, {"web1", "web2", "test1", "db"}),
    ("^web", None, {"web1", "web2"}),
    (None, "test", {"web1", "web2", "db"}),
    ("^(web|test)", "2$", {"web1", "test1"}),
    ("^db$", "^db$", set()),
])
def test_include_then_exclude_anywhere_in_the_name(include, exclude, kept):
    f = DomainFilter(compile_pattern("--libvirt.domain-include", include),
                     compile_pattern("--libvirt.domain-exclude", exclude))
    assert {n for n in ("web1", "web2", "test1", "db") if f.keeps(n)} == kept
    assert f.active == (include is not None or exclude is not None)


def test_bad_pattern_names_the_flag():
    with pytest.raises(ValueError, match="--libvirt.domain-exclude"):
        compile_pattern("--libvirt.domain-exclude", "(x")
    assert compile_pattern("--libvirt.domain-include", "") is None


def test_apply_cuts_domains_their_pids_and_unresponsive_flags():
    s = _sample(1.0, 0, 0, frozenset({"u-test1", "u-gone"}), web1=1, test1=2)
    cut = DomainFilter(exclude=re.compile("test")).apply(s)
    assert set(cut.domains) == {"u-web1"}
    assert cut.qemu_pids == {"u-web1": 100}
    # a flagged uuid the sample has no name for cannot be judged: it stays
    assert cut.unresponsive == frozenset({"u-gone"})
    assert DomainFilter(include=re.compile("")).apply(s) is s  # nothing cut: the same sample


def _collect(ctx: ScrapeContext):
    out = {}
    for fam in cpu_usage.collect(ctx):
        for smp in fam.samples:
            out[(smp.name, tuple(smp.labels.values()))] = smp.value
    return out


def test_overhead_still_subtracts_the_cpu_of_domains_not_exported():
    prev = _sample(10.0, 0, 0, web1=0, test1=0)
    cur = _sample(14.0, 600, 800, web1=2_000_000_000, test1=4_000_000_000)  # 0.5 and 1 core
    f = DomainFilter(exclude=re.compile("test"))
    m = _collect(ScrapeContext(current=f.apply(cur), previous=f.apply(prev), domain_info={},
                               unfiltered=(prev, cur), keeps_domain=f.keeps))
    assert ("libvirt_domain_cpu_usage_mhz", ("test1",)) not in m
    assert m[("libvirt_domain_cpu_usage_mhz", ("web1",))] == pytest.approx(1000)
    # host busy 4000 * 600/800 = 3000 MHz; both VMs together 3000 MHz: no overhead left
    assert m[("libvirt_host_hypervisor_overhead_mhz", ())] == pytest.approx(0.0)
