"""What the sampler publishes: one Snapshot per request, from a reader it is given (no libvirt here).

The domain XML belongs to the sample it was read with; the connection's health and the background
readings are read at each request.
"""

from __future__ import annotations

from typing import Dict, List, Mapping

import libvirt
import pytest

from samples import cpu_sample, named
from virt_exporter.sample import ConnectionHealth, DomainInfo, JobSnapshot, Sample
from virt_exporter.sampler import Sampler, SamplerOptions
from virt_exporter.snapshot import BackgroundReadings


class Clock:
    def __init__(self) -> None:
        self.now_s = 100.0

    def __call__(self) -> float:
        return self.now_s


class ScriptedReader:
    """A SampleSource: each read returns a sample of ``web`` at the clock's time, and counts."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.reads = 0
        self.forgotten: List[str] = []

    def read(self, started: float, wall_time_s: float, deadline: float) -> Sample:
        self.reads += 1
        return cpu_sample(started, named(web=self.reads * 10**9))

    def forget(self, uuid: str) -> None:
        self.forgotten.append(uuid)

    def stop(self) -> None:
        pass


def info(name: str) -> DomainInfo:
    return DomainInfo(uuid=name, name=name, os_type="hvm", arch="x86_64", machine="pc", domain_type="kvm",
                      vcpus=1, memory_kib=1024)


def test_the_snapshot_holds_the_xml_of_its_sample_and_the_health_and_readings_of_the_request() -> None:
    clock = Clock()
    reader = ScriptedReader(clock)
    xml: Dict[str, DomainInfo] = {"web": info("web")}
    reconnects = [0]
    jobs = [JobSnapshot(active={}, completed={})]

    def domain_info() -> Mapping[str, DomainInfo]:
        return dict(xml)

    sampler = Sampler(reader, SamplerOptions(min_interval_s=5.0), domain_info=domain_info,
                      connection_health=lambda: ConnectionHealth(reconnects_total=reconnects[0]),
                      background=lambda: BackgroundReadings(jobs=jobs[0]), clock=clock, wall_clock=clock)

    first = sampler.snapshot()
    assert reader.reads == 1 and first.previous is None
    assert set(first.domain_info) == {"web"} and first.connection.reconnects_total == 0
    assert first.background.jobs is jobs[0]

    # Within the min-interval the sample is reused: so is the XML read with it, while the health
    # and the background readings are those of the new request.
    xml["db"] = info("db")
    reconnects[0] = 1
    jobs[0] = JobSnapshot(active={}, completed={("migration_out", "completed"): 1})
    clock.now_s += 1.0
    reused = sampler.snapshot()
    assert reader.reads == 1 and reused.current is first.current
    assert set(reused.domain_info) == {"web"}
    assert reused.connection.reconnects_total == 1 and reused.background.jobs is jobs[0]

    # A new sample brings the XML as of that sample, and the previous one for rates.
    clock.now_s += 10.0
    fresh = sampler.snapshot()
    assert reader.reads == 2 and fresh.previous is first.current
    assert set(fresh.domain_info) == {"web", "db"}


def test_a_stop_event_reaches_the_reader_and_leaves_the_served_sample() -> None:
    clock = Clock()
    reader = ScriptedReader(clock)
    sampler = Sampler(reader, SamplerOptions(min_interval_s=5.0), clock=clock, wall_clock=clock)
    assert "web" in sampler.snapshot().current.domains
    sampler.on_lifecycle("web", libvirt.VIR_DOMAIN_EVENT_STOPPED, 0)
    assert reader.forgotten == ["web"]
    assert "web" not in sampler.snapshot().current.domains and reader.reads == 1


def test_a_failed_xml_read_publishes_no_sample_and_the_next_request_reads_again() -> None:
    clock = Clock()
    reader = ScriptedReader(clock)
    fail = [True]

    def domain_info() -> Mapping[str, DomainInfo]:
        if fail[0]:
            raise RuntimeError("scripted XML failure")
        return {"web": info("web")}

    sampler = Sampler(reader, SamplerOptions(min_interval_s=5.0), domain_info=domain_info, clock=clock,
                      wall_clock=clock)
    with pytest.raises(RuntimeError, match="scripted XML failure"):
        sampler.snapshot()
    # Nothing was published without its XML, and the sampler is not left in flight.
    fail[0] = False
    snap = sampler.snapshot()
    assert reader.reads == 2 and snap.previous is None and set(snap.domain_info) == {"web"}
