"""Engine paths where perfmon's own behaviour is the reference: a matched data source without a value
in a step reads 0.0 (ObjectReport.get_value's bare except) and NaN is compared with the level like any
value (neither above nor below: a good step, the countdown starts over). Each case runs the engine's
ObjectMonitor and the seed's process_rrd_updates (tests/perfmon/seed_model.py) on the same rows."""

from __future__ import annotations

import math
from typing import List, Optional, Sequence

import pytest

from virt_exporter.perfmon.config import parse_object_config
from virt_exporter.perfmon.datasources import DataSources
from virt_exporter.perfmon.engine import ObjectMonitor as EngineMonitor

from .harness import config_xml
from .seed_model import ObjectMonitor as SeedMonitor
from .seed_model import ObjectReport, SeedModel

STEP_S = 60
T0_S = 1_700_000_000
VARIABLE = {"name": "cpu_usage", "rrd_regex": "cpu[0-9]+", "consolidation_fn": "average",
            "alarm_trigger_level": "0.5", "alarm_trigger_period": "120", "alarm_auto_inhibit_period": "0"}
# Rows of (cpu0, cpu1); None = the source exists but has no value in that row.
Row = Sequence[Optional[float]]


def engine_alarm_times(rows: List[Row]) -> List[float]:
    monitor = EngineMonitor("vm", "u", "vm1")
    monitor.apply(parse_object_config(config_xml([VARIABLE]), "vm"), T0_S)
    times = []
    for k, row in enumerate(rows, start=1):
        values = {n: v for n, v in zip(("cpu0", "cpu1"), row) if v is not None}
        missing = frozenset(n for n, v in zip(("cpu0", "cpu1"), row) if v is None)
        times += [e.time_s for e in monitor.step(DataSources(values, missing), T0_S + k * STEP_S, STEP_S,
                                                 lambda: None) if e.sent]
    return times


def seed_alarm_times(rows: List[Row]) -> List[float]:
    model = SeedModel(STEP_S)
    model.now = T0_S
    monitor = SeedMonitor(model, "VM", "u", None)
    model.refresh(monitor, config_xml([VARIABLE]))
    model._monitor = monitor
    for k, row in enumerate(rows, start=1):
        model.now = T0_S + k * STEP_S
        report = ObjectReport("u")
        for name, value in zip(("cpu0", "cpu1"), row):
            report.vars[name] = [] if value is None else [value]  # listed, but no value in this row
        monitor.process_rrd_updates(report, 1)
    return [t for t, *_rest, sent in model.alarms if sent]


BAD, GOOD = (0.9, 0.9), (0.1, 0.1)


@pytest.mark.parametrize("rows,expected_step", [
    # a missing cpu1 reads 0.0: average 0.45, a good step that restarts the countdown
    ([BAD, (0.9, None), BAD, BAD], 4),
    # without the gap, the second bad step alarms (period 120 s = two steps)
    ([BAD, BAD, GOOD, BAD], 2),
    # NaN is neither above nor below the level: a good step
    ([BAD, (math.nan, math.nan), BAD, BAD], 4),
    ([BAD, (0.9, math.nan), BAD, BAD], 4),
    # both sources without a value: average 0.0, a good step
    ([BAD, (None, None), BAD, BAD], 4),
])
def test_missing_values_read_zero_and_nan_is_a_good_step_as_in_perfmon(rows, expected_step):
    engine, seed = engine_alarm_times(rows), seed_alarm_times(rows)
    assert engine == seed == [T0_S + expected_step * STEP_S]


# --- deviations kept on purpose, each shown against the seed --------------------------------------

ALWAYS_BAD = {"name": "cpu_usage", "rrd_regex": "cpu[0-9]+", "consolidation_fn": "average",
              "alarm_trigger_level": "0.5", "alarm_trigger_period": "60", "alarm_auto_inhibit_period": "60"}


def test_per_step_alarms_where_perfmon_batches_five_minutes_under_one_clock():
    """perfmon reads rrd_updates every 300 s and runs every row of the batch with one time.time():
    with an inhibit period under the batch, it sends one alarm per batch and inhibits the rest. The
    engine steps every rrd_step with each step's own time: an alarm per inhibit period."""
    rows = [(0.9, 0.9)] * 5
    monitor = EngineMonitor("vm", "u", "vm1")
    monitor.apply(parse_object_config(config_xml([ALWAYS_BAD]), "vm"), T0_S)
    engine = [e for k, row in enumerate(rows, start=1)
              for e in monitor.step(DataSources(dict(zip(("cpu0", "cpu1"), row))), T0_S + k * STEP_S, STEP_S,
                                    lambda: None)]
    model = SeedModel(STEP_S)
    model.now = T0_S
    seed = SeedMonitor(model, "VM", "u", None)
    model.refresh(seed, config_xml([ALWAYS_BAD]))
    model._monitor = seed
    model.now = T0_S + len(rows) * STEP_S  # the batch's one time.time()
    report = ObjectReport("u")
    for name in ("cpu0", "cpu1"):
        report.vars[name] = [0.9] * len(rows)
    seed.process_rrd_updates(report, len(rows))
    assert [e.sent for e in engine] == [True] * 5
    assert [sent for *_rest, sent in model.alarms] == [True, False, False, False, False]


def test_a_reformatted_config_keeps_its_state_where_perfmon_starts_afresh():
    """perfmon resets a variable when vc1.xmldoc.toxml() != vc2.xmldoc.toxml(): white space inside a
    <variable> counts. The engine compares tags and values, so re-indenting a config keeps the
    countdown."""
    var = dict(ALWAYS_BAD, alarm_trigger_period="120")
    compact = config_xml([var])
    spaced = compact.replace("><", ">\n  <")
    assert compact != spaced
    monitor = EngineMonitor("vm", "u", "vm1")
    monitor.apply(parse_object_config(compact, "vm"), T0_S)
    bad = DataSources({"cpu0": 0.9, "cpu1": 0.9})
    first = monitor.step(bad, T0_S + STEP_S, STEP_S, lambda: None)
    monitor.apply(parse_object_config(spaced, "vm"), T0_S + STEP_S)
    second = monitor.step(bad, T0_S + 2 * STEP_S, STEP_S, lambda: None)
    assert first == [] and [e.sent for e in second] == [True]  # the countdown went on
    model = SeedModel(STEP_S)
    model.now = T0_S
    seed = SeedMonitor(model, "VM", "u", None)
    model.refresh(seed, compact)
    for k, xml in ((1, compact), (2, spaced)):
        model.now = T0_S + k * STEP_S
        model.refresh(seed, xml)
        model.process(seed, {"cpu0": 0.9, "cpu1": 0.9})
    assert model.alarms == []  # perfmon started afresh at the reformatted config: no alarm yet
