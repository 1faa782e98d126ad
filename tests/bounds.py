"""Time bounds for tests that drive real daemons: a hung libvirtd must fail a test, not the suite, and
a wait for something that never happens fails with what it waited for."""

from __future__ import annotations

import contextlib
import signal
import time
from typing import Callable, Iterator, TypeVar

T = TypeVar("T")


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


def wait_for(predicate: Callable[[], T], timeout_s: float, what: str, interval_s: float = 0.2) -> T:
    """Poll ``predicate`` until it returns something truthy, and return that; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %.0f s waiting for %s" % (timeout_s, what))
        time.sleep(interval_s)
