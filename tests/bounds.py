"""Time bounds for tests that drive real daemons: a hung libvirtd must fail a test, not the suite."""

from __future__ import annotations

import contextlib
import signal
from typing import Iterator


@contextlib.contextmanager
def time_limit(seconds: int) -> Iterator[None]:
    """Raise TimeoutError in the main thread after ``seconds`` (SIGALRM; main thread only)."""
    def on_alarm(signum, frame):
        raise TimeoutError("test exceeded its %d s bound" % seconds)

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
