"""vCPU counts, per-vCPU counters (vcpu group) and vCPU / emulator pinning (domain XML).

``--no-collector.vcpu.per-vcpu`` drops every series with a ``vcpu`` label (a 128-vCPU guest has
five per vCPU) and exports per-domain sums of time, wait and delay instead; the counts and the
emulator pinning stay. With per-vCPU series the sums are not exported (``sum without (vcpu)`` gives
them): one series fewer per field and domain in the common case.
"""

from __future__ import annotations

from typing import Iterable

from prometheus_client.metrics_core import Metric

from ..calc.cpuset import canonical_cpuset
from .base import Option, ScrapeContext, register
from .families import NS_PER_S, counter, gauge, info

# (vcpu.N.<field>, per-vCPU family, its help, per-domain sum family)
VCPU_COUNTERS = (
    ("time", "libvirt_domain_vcpu_seconds_total", "Time the vCPU ran, seconds (vcpu.N.time).",
     "libvirt_domain_vcpus_seconds_total"),
    ("wait", "libvirt_domain_vcpu_wait_seconds_total",
     "Time the vCPU wanted to run but was not scheduled, seconds (vcpu.N.wait; needs schedstats).",
     "libvirt_domain_vcpus_wait_seconds_total"),
    ("delay", "libvirt_domain_vcpu_delay_seconds_total",
     "Time the vCPU waited in the host run queue (steal), seconds (vcpu.N.delay).",
     "libvirt_domain_vcpus_delay_seconds_total"),
)

PER_VCPU = Option("per-vcpu", bool, True,
                  "export the series with a vcpu label (state, time, wait, delay, pinning); "
                  "--no-collector.vcpu.per-vcpu exports per-domain sums of time, wait and delay instead "
                  "(default on)")




@register("vcpu", stats_groups=("vcpu",), options=(PER_VCPU,),
          help="vCPU counts, per-vCPU state, time, wait and delay, vCPU and emulator pinning")
def collect(ctx: ScrapeContext) -> Iterable[Metric]:
    per_vcpu = ctx.options.get("per-vcpu", True)
    current = gauge("libvirt_domain_vcpus", "vCPUs currently online (vcpu.current).")
    maximum = gauge("libvirt_domain_vcpus_maximum", "Maximum vCPUs (vcpu.maximum).")
    state = gauge("libvirt_domain_vcpu_state", "vCPU state: 0 offline, 1 running, 2 blocked (vcpu.N.state).",
                  ["domain", "vcpu"])
    per = [(field, counter(name, doc, ["domain", "vcpu"])) for field, name, doc, _sum in VCPU_COUNTERS]
    sums = [(field, counter(sum_name, "Sum over the domain's vCPUs of " + doc[0].lower() + doc[1:-1]
                            + "; only with --no-collector.vcpu.per-vcpu."))
            for field, _name, doc, sum_name in VCPU_COUNTERS]
    vcpu_pin = info("libvirt_domain_vcpu_pin_info",
                    "Host CPUs a pinned vCPU may run on (value 1): <cputune><vcpupin>, else <vcpu cpuset>; "
                    "no series for a vCPU that may run on every host CPU.", ["domain", "vcpu", "cpus"])
    emulator_pin = info("libvirt_domain_emulator_pin_info",
                        "Host CPUs the pinned emulator threads may run on (value 1): <emulatorpin>, else "
                        "<vcpu cpuset>; no series when they may run on every host CPU.", ["domain", "cpus"])
    for uuid, dom in ctx.current.domains.items():
        s = dom.stats
        if "vcpu.current" not in s:
            continue
        name = dom.name
        key = (name,)
        current.add_metric(key, s["vcpu.current"])
        maximum.add_metric(key, s["vcpu.maximum"])
        totals = [0.0] * len(VCPU_COUNTERS)
        seen = [False] * len(VCPU_COUNTERS)
        for i in range(int(s["vcpu.maximum"])):
            p = "vcpu.%d." % i
            labels = (name, str(i))
            if per_vcpu and p + "state" in s:
                state.add_metric(labels, s[p + "state"])
            for j, (field, family) in enumerate(per):
                value = s.get(p + field)
                if value is None:
                    continue
                totals[j] += value
                seen[j] = True
                if per_vcpu:
                    family.add_metric(labels, value / NS_PER_S)
        for j, (_field, family) in enumerate(sums):
            if seen[j] and not per_vcpu:
                family.add_metric(key, totals[j] / NS_PER_S)
        meta = ctx.domain_info.get(uuid)
        if meta is None:
            continue
        # Only what the XML pins: unpinned is the common case, and its series would be one per vCPU.
        fallback = canonical_cpuset(meta.vcpu_cpuset)
        if fallback or meta.emulator_cpuset:
            emulator_pin.add_metric([name, canonical_cpuset(meta.emulator_cpuset) or fallback], {})
        if per_vcpu:
            pins = {vcpu: canonical_cpuset(cpus) for vcpu, cpus in meta.vcpu_pins}
            for i in range(int(s["vcpu.maximum"])):
                cpus = pins.get(i, fallback)
                if cpus:
                    vcpu_pin.add_metric([name, str(i), cpus], {})
    yield from (current, maximum, state)
    for _field, family in per:
        yield family
    for _field, family in sums:
        yield family
    yield from (vcpu_pin, emulator_pin)
