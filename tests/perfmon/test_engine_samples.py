"""PerfmonEngine.step on samples, for the paths the random and case tests never take: the same sample
handed out twice, a domain that shuts off, a metadata config removed with no file default, a stuck or
incomplete domain, and a VM that is gone."""

from __future__ import annotations

import dataclasses
from typing import Dict, Optional

import pytest

from samples import sample as build_sample
from virt_exporter.perfmon.engine import PerfmonEngine
from virt_exporter.sample import DomainStats, Sample

from .harness import DOMAIN, T0_S, UUID, CounterBook, FakeDomainInfo, config_xml, file_config

STEP_S = 60
# cpu_usage above 0.5 for 180 s alarms; the countdown shows where a step went
XML = config_xml([{"name": "cpu_usage", "alarm_trigger_level": "0.5", "alarm_trigger_period": "180",
                   "alarm_auto_inhibit_period": "0"}])


class Bed:
    def __init__(self, metadata: Optional[str] = XML, default_vm_xml: Optional[str] = None) -> None:
        self.book = CounterBook()
        self.info: Dict[str, FakeDomainInfo] = {UUID: FakeDomainInfo(UUID, DOMAIN, metadata)}
        self.engine = PerfmonEngine(lambda: None, lambda: self.info, file_config(default_vm_xml), STEP_S)
        self.k = 0

    def sample(self, busy: float = 0.75, state: int = 1, present: bool = True, **fields) -> Sample:
        stats = self.book.advance_vm({"cpu0": busy}, STEP_S)
        if state != 1:
            stats = {"state.state": state}  # a shut-off domain's stats are its state only (source/bulk.py)
        domains = [DomainStats(UUID, DOMAIN, stats)] if present else []
        s = build_sample(float(1000 + self.k * STEP_S), domains, wall_time_s=float(T0_S + self.k * STEP_S))
        self.k += 1
        return dataclasses.replace(s, **fields)

    def step(self, sample: Sample):
        return self.engine.step(sample)

    def counting_down(self) -> None:
        """A baseline and one busy step: the countdown is one step into its 180 s."""
        self.step(self.sample())
        self.step(self.sample())
        assert self.countdown() == 120

    def countdown(self) -> Optional[float]:
        rows = [r for r in self.engine.snapshot().rows if r.uuid == UUID]
        return rows[0].countdown_s if rows else None


def test_the_same_sample_twice_moves_nothing():
    bed = Bed()
    bed.step(bed.sample())          # baseline
    s = bed.sample()
    bed.step(s)
    assert bed.countdown() == 120
    assert bed.step(s) == [] and bed.countdown() == 120  # handed out again: nothing moved


def test_a_domain_that_shuts_off_loses_its_monitor_and_starts_afresh():
    bed = Bed()
    bed.counting_down()
    bed.step(bed.sample(state=5))
    assert bed.countdown() is None
    bed.step(bed.sample())          # running again: a fresh monitor; no vCPU reading before → 0.0, a good step
    assert bed.countdown() == 180
    bed.step(bed.sample())
    assert bed.countdown() == 120


def test_a_metadata_config_removed_with_no_file_default_stops_monitoring():
    bed = Bed()
    bed.counting_down()
    bed.info[UUID] = FakeDomainInfo(UUID, DOMAIN, None)
    assert bed.step(bed.sample()) == [] and bed.countdown() is None


def test_a_metadata_config_removed_falls_back_to_the_file_default():
    default = config_xml([{"name": "cpu_usage", "alarm_trigger_level": "0.9"}])
    bed = Bed(default_vm_xml=default)
    bed.step(bed.sample())
    bed.step(bed.sample())
    bed.info[UUID] = FakeDomainInfo(UUID, DOMAIN, None)
    bed.step(bed.sample())
    rows = [r for r in bed.engine.snapshot().rows if r.uuid == UUID]
    assert [r.level for r in rows] == [0.9]


@pytest.mark.parametrize("fields", [{"unresponsive": frozenset({UUID})}, "incomplete"])
def test_a_stuck_or_incomplete_domain_keeps_its_state_and_skips_the_step(fields):
    bed = Bed()
    bed.counting_down()
    stuck = bed.sample(**fields) if isinstance(fields, dict) else bed.sample()
    if fields == "incomplete":
        dom = stuck.domains[UUID]
        stuck = dataclasses.replace(stuck, domains={UUID: dataclasses.replace(dom, complete=False)})
    assert bed.step(stuck) == [] and bed.countdown() == 120  # neither reset nor counted down
    bed.step(bed.sample())
    assert bed.countdown() == 60


def test_the_monitor_of_a_vm_that_is_gone_is_dropped():
    bed = Bed()
    bed.counting_down()
    bed.step(bed.sample(present=False))
    assert bed.countdown() is None
