"""What both the command line (cli.py) and the wiring (app.py) need: the start-up error (usage.py's,
named here for app.py) and the collectors and options the flags select. Its own module so that
neither imports the other."""

from __future__ import annotations

import argparse
from typing import Any, Dict, List

from .collectors import base
from .usage import UsageError

__all__ = ["UsageError", "collector_options", "enabled_collectors", "listings", "option_dest", "stats_groups"]


def enabled_collectors(args: argparse.Namespace) -> List[base.CollectorSpec]:
    out = []
    for spec in sorted(base.REGISTRY.values(), key=lambda s: s.name):
        flag = getattr(args, "collector_" + spec.name)
        if flag if flag is not None else spec.default_enabled:
            out.append(spec)
    return out


def option_dest(collector: str, option: str) -> str:
    """The argparse attribute of ``--collector.<collector>.<option>``."""
    return "opt_%s_%s" % (collector, option.replace("-", "_"))


def collector_options(args: argparse.Namespace) -> Dict[str, Dict[str, Any]]:
    def value(spec: base.CollectorSpec, opt: base.Option) -> Any:
        given = getattr(args, option_dest(spec.name, opt.name))
        if opt.repeatable:
            return tuple(given) if given is not None else opt.default
        return given

    return {spec.name: {opt.name: value(spec, opt) for opt in spec.options} for spec in base.REGISTRY.values()}


def listings(collectors: List[base.CollectorSpec]) -> List[str]:
    """The per-sample listings (source/listings.py kinds) the enabled collectors need."""
    out: List[str] = []
    for spec in collectors:
        out += [kind for kind in spec.reads if kind not in out]
    return out


def stats_groups(collectors: List[base.CollectorSpec]) -> List[str]:
    """The bulk stats groups the enabled collectors need, state always first."""
    groups = ["state"]
    for spec in collectors:
        groups += [g for g in spec.stats_groups if g not in groups]
    return groups
