"""The metric and flag tables of docs/metrics.md, generated from the code so they cannot drift.

    python -m virt_exporter.catalogue            # print both tables (Markdown)
    python -m virt_exporter.catalogue --update   # rewrite them in docs/metrics.md

Metric families are listed by running every collector (and the exporter's own health part) on an
empty sample: collectors yield their families even when they have no rows, with name, type, labels
and HELP text. tests/test_readme.py checks docs/metrics.md holds exactly this output.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Iterable, List, Tuple

from prometheus_client.metrics_core import Metric

from .collectors import base, load_all

BEGIN_METRICS, END_METRICS = "<!-- metrics:begin -->", "<!-- metrics:end -->"
BEGIN_FLAGS, END_FLAGS = "<!-- flags:begin -->", "<!-- flags:end -->"
# Where the tables live: the metric reference, next to the package in a checkout.
METRICS_DOC = Path(__file__).resolve().parents[1] / "docs" / "metrics.md"




def _idle_context(spec: base.CollectorSpec) -> base.ScrapeContext:
    """An empty sample and what the background subsystems show before their first reading: every
    family, no series."""
    from .perfmon.config import parse_perfmon_file
    from .perfmon.engine import PerfmonEngine
    from .sample import BlockEventCounts, NumaSnapshot, Sample

    empty = Sample(wall_time_s=0.0, monotonic_s=0.0, up=True, autostart=frozenset(), persistent=frozenset(),
                   storage_pools=())
    engine = PerfmonEngine(lambda: empty, dict, parse_perfmon_file("<perfmon/>", "catalogue"), 60)
    return base.ScrapeContext(current=empty, previous=None, domain_info={},
                              options={o.name: o.default for o in spec.options}, perfmon=engine.snapshot(),
                              numa=NumaSnapshot({}, {}, True, "", 0.0),
                              block_events=BlockEventCounts({}, {}, 0))


def metric_rows() -> List[Tuple[str, str, str, str, str]]:
    """(collector, name as exposed, type, labels, help) for every family."""
    from .exposition import FastFamily, sample_name
    from .sample import Sample

    load_all()
    rows: List[Tuple[str, str, str, str, str]] = []
    seen = set()

    def add(collector: str, families: Iterable[Metric]) -> None:
        for fam in families:
            typ = fam.type
            exposed = sample_name(fam.name, typ)
            if exposed in seen:
                continue
            seen.add(exposed)
            labels = ", ".join(getattr(fam, "labelnames", ())) if isinstance(fam, FastFamily) else ""
            rows.append((collector, exposed, typ, labels, " ".join(fam.documentation.split())))

    for spec in sorted(base.REGISTRY.values(), key=lambda s: s.name):
        try:
            add(spec.name, spec.collect(_idle_context(spec)))
        except Exception as e:  # a collector that needs a snapshot it did not get
            print("catalogue: collector %s yields nothing without its subsystem (%s)" % (spec.name, e),
                  file=sys.stderr)
    from .exporter import health_families

    add("(always)", health_families(Sample(wall_time_s=0.0, monotonic_s=0.0, up=True)))
    return rows


def metrics_markdown() -> str:
    lines = ["| metric | type | labels | collector | meaning |", "|---|---|---|---|---|"]
    for collector, name, typ, labels, doc in metric_rows():
        lines.append("| `%s` | %s | %s | %s | %s |" % (name, typ, labels, collector, doc.replace("|", "\\|")))
    return "\n".join(lines)


def flags_markdown() -> str:
    from .cli import build_parser

    load_all()
    parser = build_parser()
    lines = ["| flag | meaning |", "|---|---|"]
    for action in parser._actions:  # argparse has no public listing of its actions
        if not action.option_strings or action.help == argparse.SUPPRESS or "--help" in action.option_strings:
            continue
        flags = " / ".join("`%s`" % o for o in action.option_strings)
        if action.dest.startswith("collector_"):
            flags = "`--collector.%s` / `--no-collector.%s`" % ((action.dest[len("collector_"):],) * 2)
        lines.append("| %s | %s |" % (flags, " ".join((action.help or "").split()).replace("|", "\\|")))
    return "\n".join(lines)


def _replace_block(text: str, begin: str, end: str, body: str) -> str:
    pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.S)
    if not pattern.search(text):
        raise SystemExit("markers %s … %s not found" % (begin, end))
    return pattern.sub(lambda _m: begin + "\n" + body + "\n" + end, text)


def updated_document(text: str) -> str:
    """``text`` (a Markdown file with both pairs of markers) with both tables regenerated."""
    text = _replace_block(text, BEGIN_METRICS, END_METRICS, metrics_markdown())
    return _replace_block(text, BEGIN_FLAGS, END_FLAGS, flags_markdown())


def main(argv: List[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m virt_exporter.catalogue")
    ap.add_argument("--update", metavar="FILE", nargs="?", const=str(METRICS_DOC),
                    help="rewrite the generated blocks of FILE (default: docs/metrics.md of this checkout)")
    args = ap.parse_args(argv)
    if args.update:
        with open(args.update, encoding="utf-8") as f:
            text = f.read()
        new = updated_document(text)
        if new != text:
            with open(args.update, "w", encoding="utf-8") as f:
                f.write(new)
        return 0
    print(metrics_markdown())
    print()
    print(flags_markdown())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
