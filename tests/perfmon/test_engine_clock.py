"""The engine's timer (``PerfmonEngine._run``) on a fake clock: steps land every step_s on one grid from
the first; a step whose sample ran late skips the ticks it missed, never runs them back to back, and the
next step lands on the grid again; a failing sample keeps the grid. Nothing here sleeps: the fake clock
moves when the engine waits and when a sample takes time."""

from __future__ import annotations

from typing import List, Sequence, Tuple

import pytest

from samples import sample
from virt_exporter.perfmon.engine import PerfmonEngine

from .harness import file_config

START_S = 1000.0


class FakeTimer:
    """The engine's clock and its stop event in one: ``wait(t)``, the timer's only sleep, moves the
    clock by t at once."""

    def __init__(self) -> None:
        self.now_s = START_S
        self.stopped = False

    def __call__(self) -> float:
        return self.now_s

    def wait(self, timeout_s: float) -> bool:
        assert timeout_s > 0, "the timer waited %r s: a step would run back to back" % timeout_s
        self.now_s += timeout_s
        return self.stopped

    def is_set(self) -> bool:
        return self.stopped

    def set(self) -> None:
        self.stopped = True


def run(step_s: int, sample_s: Sequence[float], failing: Sequence[int] = ()) -> Tuple[List[float], PerfmonEngine]:
    """Run the timer for ``len(sample_s)`` steps whose samples take those durations (fake seconds);
    the ones numbered in ``failing`` raise. Returns when each step began, and the engine."""
    timer = FakeTimer()
    began: List[float] = []

    def get_sample():
        n = len(began)
        began.append(timer.now_s)
        timer.now_s += sample_s[n]
        if n + 1 == len(sample_s):
            timer.set()
        if n in failing:
            raise RuntimeError("libvirt went away")
        return None, sample(timer.now_s, wall_time_s=1e9 + timer.now_s)

    engine = PerfmonEngine(get_sample, lambda: {}, file_config(), step_s, fs_fraction=lambda: 0.0, clock=timer)
    engine._stop = timer  # type: ignore[assignment]  # the timer's sleep, on the fake clock
    engine._run()
    return began, engine


@pytest.mark.parametrize("step_s", [1, 5, 60])
def test_steps_land_every_step_s(step_s):
    began, engine = run(step_s, [0.2 * step_s] * 6)
    assert began == [START_S + i * step_s for i in range(6)]
    assert engine.snapshot().steps_total == 6


def test_a_late_step_skips_the_ticks_it_missed_and_the_next_lands_on_the_grid():
    # the second sample takes 12 s of a 5 s step: ticks 1010 and 1015 are missed
    began, engine = run(5, [0.5, 12.0, 0.5, 0.5])
    assert began == [1000.0, 1005.0, 1020.0, 1025.0]
    assert engine.snapshot().steps_total == 4


def test_a_failing_sample_keeps_the_grid():
    began, engine = run(5, [0.5, 0.5, 0.5, 0.5], failing=[1])
    assert began == [1000.0, 1005.0, 1010.0, 1015.0]
    snap = engine.snapshot()
    assert (snap.steps_total, snap.step_failures_total) == (3, 1)
