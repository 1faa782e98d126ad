"""Family constructors shared by collectors: client_python-compatible, rendered by the fast path."""

from __future__ import annotations

from typing import Sequence

from ..calc.mhz import NS_PER_S  # noqa: F401  (re-exported for the collectors)
from ..exposition import FastFamily, family_name

KIB = 1024  # libvirt reports memory in KiB


def gauge(name: str, documentation: str, labels: Sequence[str] = ("domain",)) -> FastFamily:
    return FastFamily(name, documentation, "gauge", labels)


def counter(name: str, documentation: str, labels: Sequence[str] = ("domain",)) -> FastFamily:
    """``name`` as exposed (with _total): the family is named without it, as client_python's counters."""
    return FastFamily(family_name(name, "counter"), documentation, "counter", labels)


def info(name: str, documentation: str, labels: Sequence[str]) -> FastFamily:
    """``name`` as exposed (with _info): the family is named without it, as client_python's info families."""
    return FastFamily(family_name(name, "info"), documentation, "info", labels)
