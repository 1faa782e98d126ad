"""Family constructors shared by collectors: client_python-compatible, rendered by the fast path."""

from __future__ import annotations

from typing import Sequence

from ..calc.mhz import NS_PER_S  # noqa: F401  (re-exported for the collectors)
from ..exposition import FastFamily

KIB = 1024  # libvirt reports memory in KiB


def gauge(name: str, documentation: str, labels: Sequence[str] = ("domain",)) -> FastFamily:
    return FastFamily(name, documentation, "gauge", labels)


def counter(name: str, documentation: str, labels: Sequence[str] = ("domain",)) -> FastFamily:
    # The family is named without _total; its samples get it (as client_python's counters).
    if name.endswith("_total"):
        name = name[:-6]
    return FastFamily(name, documentation, "counter", labels)


def info(name: str, documentation: str, labels: Sequence[str]) -> FastFamily:
    # The family is named without _info; its samples get it (as client_python's info families).
    if name.endswith("_info"):
        name = name[:-5]
    return FastFamily(name, documentation, "info", labels)
