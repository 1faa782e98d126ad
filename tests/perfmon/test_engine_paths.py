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

from .harness import SeedVM, config_xml

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
    seed = SeedVM(STEP_S, config_xml([VARIABLE]))
    for k, row in enumerate(rows, start=1):
        # a None: the source is in the page, but its column has no value in this row
        seed.run(T0_S + k * STEP_S, dict(zip(("cpu0", "cpu1"), row)))
    return [t for t, _name, _value, sent in seed.alarms() if sent]


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

# The deviations kept on purpose are shown against the seed in test_deviations.py.
