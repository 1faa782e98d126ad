"""The engine's timer (``PerfmonEngine.start``) on a fake clock: steps land every step_s on one grid from
the first; a step whose sample ran late skips the ticks it missed, never runs them back to back, and the
next step lands on the grid again; a failing sample keeps the grid. Nothing here sleeps: the fake clock
moves when the engine waits and when a sample takes time."""

from __future__ import annotations

import threading
from typing import List, Optional, Sequence, Tuple

import pytest

from samples import sample
from virt_exporter.perfmon.engine import PerfmonEngine

from .harness import file_config

START_S = 1000.0


class FakeTimer:
    """The engine's clock and its stop event in one: ``wait(t)``, the timer's only sleep, moves the
    clock by t at once. A wait of no time (steps back to back) is recorded, as the timer's thread
    cannot fail the test itself."""

    def __init__(self) -> None:
        self.now_s = START_S
        self.stopped = threading.Event()
        self.back_to_back: List[float] = []

    def __call__(self) -> float:
        return self.now_s

    def wait(self, timeout: Optional[float] = None) -> bool:
        assert timeout is not None, "the step timer waits for a time, never for good"
        if timeout <= 0:
            self.back_to_back.append(self.now_s)
        self.now_s += max(0.0, timeout)
        return self.stopped.is_set()

    def is_set(self) -> bool:
        return self.stopped.is_set()

    def set(self) -> None:
        self.stopped.set()

    def clear(self) -> None:
        self.stopped.clear()


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

    engine = PerfmonEngine(get_sample, lambda: {}, file_config(), step_s, fs_fraction=lambda: 0.0, clock=timer,
                           stop_event=timer)
    engine.start()
    assert timer.stopped.wait(30), "the timer did not reach its last step"
    assert engine.stop(), "the timer's thread did not end"  # joined: its last step is done
    assert not timer.back_to_back, "steps ran back to back at %r" % timer.back_to_back
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
