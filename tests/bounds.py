"""Waits with a bound: a wait for something that never happens fails with what it waited for. (A test's
own bound is pytest-timeout's: `pytest.mark.timeout`, and the suite-wide default in pyproject.toml.)"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, List, Optional, TypeVar

T = TypeVar("T")


def wait_for(predicate: Callable[[], T], timeout_s: float, what: str, interval_s: float = 0.2,
             detail: Optional[Callable[[], object]] = None) -> T:
    """Poll ``predicate`` until it returns something truthy, and return that; fail after ``timeout_s``,
    with ``detail()`` (a log tail, the last reading) in the message when given."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            message = "timed out after %.0f s waiting for %s" % (timeout_s, what)
            raise AssertionError(message + ("\n%s" % detail() if detail is not None else ""))
        time.sleep(interval_s)


def finishes(fn: Callable[[], T], timeout_s: float = 10.0) -> T:
    """``fn()`` run in another thread, which must finish by itself while what would block it stays
    in place (a test of "does not wait", not of speed; the bound only catches a hang). Exceptions
    are raised here."""
    result: List[Any] = []

    def run() -> None:
        try:
            result.append(("ok", fn()))
        except BaseException as e:  # handed to the caller
            result.append(("error", e))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout_s)
    assert result, "still blocked after %.0f s" % timeout_s
    kind, value = result[0]
    if kind == "error":
        raise value
    return value
