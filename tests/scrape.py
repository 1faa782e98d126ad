"""The tests' one reading of an exposition (/metrics text): prometheus_client's parsers, and the
lookups the tests make on what they return."""

from __future__ import annotations

import collections
from typing import Dict, List, Optional, Tuple

from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics.parser import text_string_to_metric_families as _openmetrics_families
from prometheus_client.parser import text_string_to_metric_families as _text_families

# (name, sorted labels) of one series
Key = Tuple[str, Tuple[Tuple[str, str], ...]]
Series = Dict[Key, float]


def families(text: str, openmetrics: bool = False) -> List[Metric]:
    """The metric families of an exposition, in the Prometheus text format or OpenMetrics."""
    return list((_openmetrics_families if openmetrics else _text_families)(text))


def keys(text: str, openmetrics: bool = False) -> List[Key]:
    """Every series of an exposition, in order, repeats included."""
    return [(s.name, tuple(sorted(s.labels.items()))) for f in families(text, openmetrics) for s in f.samples]


def series(text: str) -> Series:
    """{(name, sorted labels): value} of an exposition."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families(text) for s in f.samples}


def value(parsed: Series, name: str, **labels: str) -> Optional[float]:
    return parsed.get((name, tuple(sorted(labels.items()))))


def duplicates(text: str) -> List[str]:
    """Series (name and label set) that appear more than once in an exposition."""
    counts = collections.Counter(keys(text))
    return ["%s%s x%d" % (n, dict(labels), c) for (n, labels), c in counts.items() if c > 1]


class Samples:
    """Parsed exposition: (name, frozenset(labels.items())) → value, plus lookups."""

    def __init__(self, parsed: List[Metric]) -> None:
        self.families = {f.name: f for f in parsed}
        self.values: Dict[Tuple[str, frozenset], float] = {}
        for f in parsed:
            for s in f.samples:
                self.values[(s.name, frozenset(s.labels.items()))] = s.value

    @classmethod
    def parse(cls, text: str) -> "Samples":
        return cls(families(text))

    def get(self, name: str, **labels: str) -> Optional[float]:
        return self.values.get((name, frozenset(labels.items())))

    def series(self, name: str, **match: str) -> List[Tuple[Dict[str, str], float]]:
        out = []
        for (n, labels), v in self.values.items():
            d = dict(labels)
            if n == name and all(d.get(k) == val for k, val in match.items()):
                out.append((d, v))
        return out

    def names_for_domain(self, domain: str) -> List[str]:
        return sorted({n for (n, labels), _v in self.values.items() if dict(labels).get("domain") == domain})


def printed_series(text: str) -> List[str]:
    """Every sample line's name{labels} as printed, repeats kept: a cheap fingerprint for tests that
    compare many bodies (one that must also be valid is parsed with ``families`` once)."""
    return [line.rsplit(" ", 1)[0] for line in text.splitlines() if line and not line.startswith("#")]
