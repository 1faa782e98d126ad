"""Drives the engine with synthetic Samples built from wanted per-step data-source values, and the seed
model with the same values, so both can be compared alarm for alarm.

Values are chosen so the counters are whole numbers and the engine's rates come out bit-exact
(cpu shares in sixteenths, byte rates in whole bytes/s).
"""

from __future__ import annotations

import dataclasses
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from samples import sample
from virt_exporter.perfmon.config import PerfmonFileConfig, parse_perfmon_file
from virt_exporter.perfmon.engine import AlarmEvent, PerfmonEngine
from virt_exporter.sample import CpuTimes, DomainStats, HostCpu, HostMemory
from virt_exporter.source.host import NetDevCounters

from .seed_model import Perfmon, rrd_updates

T0_S = 1_700_000_000
UUID = "00000000-0000-4000-8000-00000000000a"
DOMAIN = "guest-a"
HOST_UUID = "host"  # the seed's host monitor's uuid; the engine's alarms name no uuid for the host
HOST_JIFFIES_PER_STEP = 1600  # busy = k × 100 jiffies gives a share of exactly k/16


def config_xml(variables: Sequence[Mapping[str, object]]) -> str:
    """``<config>`` with one ``<variable>`` per mapping (tag → value), no whitespace, tags in order."""
    parts = ["<config>"]
    for var in variables:
        parts.append("<variable>")
        for tag, value in var.items():
            parts.append('<%s value="%s"/>' % (tag, value))
        parts.append("</variable>")
    parts.append("</config>")
    return "".join(parts)


def file_config(vm_xml: Optional[str] = None, host_xml: Optional[str] = None) -> PerfmonFileConfig:
    body = ""
    if host_xml is not None:
        body += "<host>%s</host>" % host_xml
    if vm_xml is not None:
        body += "<vm>%s</vm>" % vm_xml
    return parse_perfmon_file("<perfmon>%s</perfmon>" % body, "test.xml")


@dataclasses.dataclass
class FakeDomainInfo:
    uuid: str
    name: str
    perfmon_xml: Optional[str] = None


class CounterBook:
    """Cumulative libvirt / proc counters that advance by value × interval each step."""

    def __init__(self) -> None:
        self.vm: Dict[str, float] = {}
        self.host: Dict[str, float] = {}

    def advance_vm(self, values: Mapping[str, float], interval_s: int) -> Dict[str, object]:
        stats: Dict[str, object] = {"state.state": 1, "state.reason": 1}
        vcpus = sorted(int(n[3:]) for n in values if n.startswith("cpu"))
        nets = sorted({int(n.split("_")[1]) for n in values if n.startswith("vif_")})
        disks = sorted({n.split("_")[1] for n in values if n.startswith("vbd_")})
        for n, v in values.items():
            scale = 1e9 if n.startswith("cpu") else 1
            if n.startswith(("cpu", "vif_", "vbd_")):
                inc = v * interval_s * scale
                assert inc == int(inc), (n, v, "choose values that give whole counters")
                self.vm[n] = self.vm.get(n, 0) + int(inc)
        if vcpus:
            stats["vcpu.current"] = stats["vcpu.maximum"] = max(vcpus) + 1
            for i in vcpus:
                stats["vcpu.%d.state" % i] = 1
                stats["vcpu.%d.time" % i] = self.vm["cpu%d" % i]
        if nets:
            stats["net.count"] = max(nets) + 1
            for i in nets:
                stats["net.%d.name" % i] = "vnet%d" % i
                stats["net.%d.rx.bytes" % i] = self.vm.get("vif_%d_rx" % i, 0)
                stats["net.%d.tx.bytes" % i] = self.vm.get("vif_%d_tx" % i, 0)
        if disks:
            stats["block.count"] = len(disks)
            for i, target in enumerate(disks):
                stats["block.%d.name" % i] = target
                stats["block.%d.rd.bytes" % i] = self.vm.get("vbd_%s_read" % target, 0)
                stats["block.%d.wr.bytes" % i] = self.vm.get("vbd_%s_write" % target, 0)
        if "memory" in values:
            stats["balloon.current"] = int(values["memory"]) // 1024
        if "memory_internal_free" in values:
            stats["balloon.unused"] = int(values["memory_internal_free"])
        return stats

    def advance_host(self, values: Mapping[str, float],
                     interval_s: int) -> Tuple[HostCpu, Dict[str, NetDevCounters], HostMemory]:
        per_cpu = {}
        for n, v in values.items():
            if n.startswith("cpu"):
                busy = v * HOST_JIFFIES_PER_STEP
                assert busy == int(busy) and 0 <= v <= 1
                i = int(n[3:])
                self.host["busy%d" % i] = self.host.get("busy%d" % i, 0) + int(busy)
                self.host["idle%d" % i] = self.host.get("idle%d" % i, 0) + HOST_JIFFIES_PER_STEP - int(busy)
                per_cpu[i] = CpuTimes(int(self.host["busy%d" % i]), 0, 0, int(self.host["idle%d" % i]), 0, 0, 0)
            elif n.startswith("pif_"):
                self.host[n] = self.host.get(n, 0) + int(v * interval_s)
        ifnames = sorted({n[4:-3] for n in values if n.startswith("pif_")})
        net_dev = {i: NetDevCounters(int(self.host.get("pif_%s_rx" % i, 0)), 0,
                                     int(self.host.get("pif_%s_tx" % i, 0)), 0)
                   for i in ifnames}
        agg = CpuTimes(sum(c.user for c in per_cpu.values()), 0, 0, sum(c.idle for c in per_cpu.values()), 0, 0, 0)
        memory = HostMemory(int(values.get("memory_total_kib", 0)), int(values.get("memory_free_kib", 0)))
        return HostCpu(agg, per_cpu), net_dev, memory


class SeedVM:
    """The seed's perfmon watching one VM with one config from ``t0_s`` on: ``run`` is one pass of
    its loop over a page of ``rows`` (one per step by default) at time ``now_s``."""

    def __init__(self, step_s: int, xml: Optional[str], t0_s: float = T0_S, uuid: str = UUID) -> None:
        self.uuid = uuid
        self.perfmon = Perfmon(step_s, now=t0_s)
        self.perfmon.other_config[uuid] = xml
        self.perfmon.run_once(rrd_updates({("vm", uuid): []}, num_rows=0))
        assert not self.perfmon.errors, self.perfmon.errors

    @property
    def variables(self) -> list:
        return self.perfmon.vm_mon_lookup[self.uuid].variables

    def run(self, now_s: float, *rows: Mapping[str, Optional[float]]) -> None:
        self.perfmon.now = now_s
        self.perfmon.run_once(rrd_updates({("vm", self.uuid): [dict(r) for r in rows]}, num_rows=len(rows)))

    def alarms(self) -> List[tuple]:
        """(time, variable, value, sent) of every attempt."""
        return [(t, name, value, sent) for t, _type, _uuid, name, _prio, value, sent in self.perfmon.alarms]


class Pair:
    """One engine and one seed model fed the same step values for one VM and/or the host."""

    def __init__(self, step_s: int, vm_xml: Optional[str] = None, host_xml: Optional[str] = None,
                 default_vm_xml: Optional[str] = None, fs_usage: float = 0.0) -> None:
        self.step_s = step_s
        self.fs_usage = fs_usage
        self.book = CounterBook()
        self.info = {UUID: FakeDomainInfo(UUID, DOMAIN, vm_xml)}
        self.events: List[AlarmEvent] = []
        self.engine = PerfmonEngine(lambda: None, lambda: self.info, file_config(default_vm_xml, host_xml), step_s,
                                    fs_fraction=lambda: self.fs_usage)
        # The seed's perfmon sees the effective config of each object in other-config:perfmon.
        self.perfmon = Perfmon(step_s, now=T0_S, fs_usage=lambda: self.fs_usage)
        self.k = 0
        self.perfmon.other_config = {UUID: vm_xml if vm_xml is not None else default_vm_xml, HOST_UUID: host_xml}

    def _feed(self, vm_values: Mapping[str, float], host_values: Mapping[str, float]) -> List[AlarmEvent]:
        t = T0_S + self.k * self.step_s
        stats = self.book.advance_vm(vm_values, self.step_s)
        host_cpu, net_dev, memory = self.book.advance_host(host_values, self.step_s)
        current = sample(float(1000 + self.k * self.step_s), [DomainStats(UUID, DOMAIN, stats)],
                         wall_time_s=float(t), host_cpu=host_cpu, host_memory=memory, net_dev=net_dev)
        events = self.engine.step(current)
        self.events += events
        return events

    def set_vm_xml(self, xml: Optional[str], seed_xml: Optional[str] = None) -> None:
        """Change the VM's config in its metadata (None: no metadata, the file's default applies; the
        file is read once, at start-up). The engine applies it at its next step; the seed is sent its
        ``refresh`` command so that it re-reads configs at its next run too (on its own it would wait
        up to config_update_period, a documented deviation). ``seed_xml``, when given, is what the seed
        is shown instead (a test's documented deviation)."""
        self.info[UUID] = FakeDomainInfo(UUID, DOMAIN, xml)
        self.perfmon.other_config[UUID] = xml if seed_xml is None else seed_xml
        self.perfmon.refresh()

    def step(self, vm_values: Mapping[str, float], host_values: Mapping[str, float] = {}) -> None:
        """One step for both: the VM and the host are in every rrd_updates page, as in perfmon."""
        if self.k == 0:
            # Baseline sample at T0 with the same devices: the engine loads its configs (now = T0)
            # and has no rates yet; the seed creates its monitors at T0 from a page without rows.
            self._feed({n: 0 for n in vm_values}, {n: 0 for n in host_values})
            self.perfmon.run_once(rrd_updates({("vm", UUID): [], ("host", HOST_UUID): []}, num_rows=0))
        self.k += 1
        self.perfmon.now = T0_S + self.k * self.step_s
        self._feed(vm_values, host_values)
        self.perfmon.run_once(rrd_updates({("vm", UUID): [dict(vm_values)], ("host", HOST_UUID): [dict(host_values)]}))

    def engine_alarms(self) -> List[tuple]:
        return sorted((e.time_s, "VM" if e.object_type == "vm" else "HOST", e.uuid or HOST_UUID, e.variable,
                       e.priority, e.value, e.sent) for e in self.events)

    def model_alarms(self) -> List[tuple]:
        return sorted(self.perfmon.alarms)
