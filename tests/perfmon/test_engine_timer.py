"""The engine's own timer: steps every step_s through get_sample, survives failing samples, stops."""

import itertools
import threading
import time

from bounds import wait_for
from samples import sample
from virt_exporter.perfmon.engine import PerfmonEngine

from .harness import file_config


def test_timer_steps_survives_a_failing_sample_and_stops():
    calls = itertools.count()
    lock = threading.Lock()

    def get_sample():
        with lock:
            n = next(calls)
        if n == 1:
            raise RuntimeError("libvirt went away")
        now = time.monotonic()
        return (None, sample(now, wall_time_s=time.time()))  # a sampler's (previous, current)

    engine = PerfmonEngine(get_sample, lambda: {}, file_config(), 1, fs_fraction=lambda: 0.0)
    engine.start()
    try:
        wait_for(lambda: engine.snapshot().steps_total >= 2, 8, "two steps, one failed", 0.05)
    finally:
        t0 = time.monotonic()
        engine.stop(timeout_s=5)
        stopped_in_s = time.monotonic() - t0
    snap = engine.snapshot()
    assert snap.steps_total >= 2 and snap.step_failures_total == 1
    assert stopped_in_s < 1.0
    steps = snap.steps_total
    time.sleep(1.3)
    assert engine.snapshot().steps_total == steps  # nothing runs after stop()
