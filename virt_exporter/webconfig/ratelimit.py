"""rate_limit: a token bucket, as exporter-toolkit's limiter (refill one per interval, up to burst)."""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Dict, Tuple

from .fields import Problem, mapping, parse_go_duration_s

_KEYS = ("interval", "burst")


def parse_rate_limit(raw: Any) -> Tuple[float, int]:
    """(interval in seconds, burst); interval 0 means unlimited."""
    fields: Dict[str, Any] = mapping(raw, "rate_limit", _KEYS)
    interval_s = parse_go_duration_s(fields.get("interval"), "rate_limit.interval")
    burst = fields.get("burst", 0)
    if not isinstance(burst, int) or isinstance(burst, bool) or burst < 0:
        raise Problem("rate_limit.burst: expected a non-negative integer")
    if interval_s > 0 and burst < 1:
        # Go's limiter with burst 0 refuses every request; make that a start-up error instead.
        raise Problem("rate_limit.burst: must be at least 1 when rate_limit.interval is set")
    return interval_s, burst


class TokenBucket:
    """Thread-safe; ``allow()`` is always True when the interval is 0. ``clock`` (monotonic seconds)
    is there for tests that refill the bucket without waiting."""

    def __init__(self, interval_s: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval_s = interval_s
        self.burst = burst
        self.clock = clock
        self._tokens = float(burst)
        self._tokens_at_s = clock()
        self._lock = threading.Lock()

    def allow(self) -> bool:
        if self.interval_s <= 0:
            return True
        with self._lock:
            now_s = self.clock()
            refill = (now_s - self._tokens_at_s) / self.interval_s
            self._tokens = min(float(self.burst), self._tokens + refill)
            self._tokens_at_s = now_s
            # A token refilled in steps adds up in floats to a hair under 1 (six sixths): it counts.
            if self._tokens >= 1.0 - 1e-9:
                self._tokens = max(0.0, self._tokens - 1.0)
                return True
            return False
