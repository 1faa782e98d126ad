"""Per-vCPU counters (vcpu group)."""

from __future__ import annotations

from typing import Iterable

from prometheus_client.metrics_core import Metric

from .base import ScrapeContext, register
from .families import NS_PER_S, counter, gauge


@register("vcpu", stats_groups=("vcpu",), help="vCPU counts and per-vCPU time, wait and delay")
def collect(ctx: ScrapeContext) -> Iterable[Metric]:
    current = gauge("libvirt_domain_vcpus", "vCPUs currently online (vcpu.current).")
    maximum = gauge("libvirt_domain_vcpus_maximum", "Maximum vCPUs (vcpu.maximum).")
    state = gauge("libvirt_domain_vcpu_state", "vCPU state: 0 offline, 1 running, 2 blocked (vcpu.N.state).",
                  ["domain", "vcpu"])
    time_s = counter("libvirt_domain_vcpu_seconds_total", "Time the vCPU ran, seconds (vcpu.N.time).",
                     ["domain", "vcpu"])
    wait = counter("libvirt_domain_vcpu_wait_seconds_total",
                   "Time the vCPU wanted to run but was not scheduled, seconds (vcpu.N.wait; needs schedstats).",
                   ["domain", "vcpu"])
    delay = counter("libvirt_domain_vcpu_delay_seconds_total",
                    "Time the vCPU waited in the host run queue (steal), seconds (vcpu.N.delay).",
                    ["domain", "vcpu"])
    for dom in ctx.current.domains.values():
        s = dom.stats
        if "vcpu.current" not in s:
            continue
        name = dom.name
        key = (name,)
        current.add_metric(key, s["vcpu.current"])
        maximum.add_metric(key, s["vcpu.maximum"])
        for i in range(int(s["vcpu.maximum"])):
            p = "vcpu.%d." % i
            labels = (name, str(i))
            if p + "state" in s:
                state.add_metric(labels, s[p + "state"])
            if p + "time" in s:
                time_s.add_metric(labels, s[p + "time"] / NS_PER_S)
            if p + "wait" in s:
                wait.add_metric(labels, s[p + "wait"] / NS_PER_S)
            if p + "delay" in s:
                delay.add_metric(labels, s[p + "delay"] / NS_PER_S)
    yield from (current, maximum, state, time_s, wait, delay)
