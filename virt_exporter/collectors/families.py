"""Small helpers shared by collectors: family constructors with the label names fixed up front."""

from __future__ import annotations

from typing import Sequence

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily

NS_PER_S = 1e9


def gauge(name: str, documentation: str, labels: Sequence[str] = ("domain",)) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, labels=list(labels))


def counter(name: str, documentation: str, labels: Sequence[str] = ("domain",)) -> CounterMetricFamily:
    # client_python appends _total itself; pass the name without it.
    if name.endswith("_total"):
        name = name[:-6]
    return CounterMetricFamily(name, documentation, labels=list(labels))


def info(name: str, documentation: str, labels: Sequence[str]) -> InfoMetricFamily:
    # InfoMetricFamily appends _info; pass the name without it.
    if name.endswith("_info"):
        name = name[:-5]
    return InfoMetricFamily(name, documentation, labels=list(labels))
