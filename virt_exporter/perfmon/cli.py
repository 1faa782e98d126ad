"""``virt-exporter perfmon-check`` and ``virt-exporter perfmon-rules``.

Both take either a ``--perfmon.config`` file (``<perfmon><host>…</host><vm>…</vm></perfmon>``) or a
single per-object document (``<config>…</config>``, e.g. a domain's metadata) with ``--object``.
Exit codes: 0 fine, 2 unusable config or arguments (one line on stderr).
"""

from __future__ import annotations

import json
import sys
from typing import List, Optional, Sequence, TextIO, Tuple

import yaml

from ..usage import UsageError, UsageParser, fail
from . import replay
from .config import (
    PERFMON_METADATA_KEY,
    PERFMON_METADATA_NS,
    ObjectConfig,
    PerfmonConfigError,
    VariableConfig,
    load_perfmon_file,
    parse_config_element,
    parse_perfmon_file,
    parse_xml,
    severity_of_priority,
)
from .rules import alertmanager_routes, native_rules, periods_for

EXIT_OK = 0


def _load(path: str, object_type: Optional[str]) -> List[Tuple[str, ObjectConfig]]:
    """(label, config) for every object config in the file."""
    try:
        with open(path, "rb") as f:
            data = f.read(1 << 20)
    except OSError as e:
        raise PerfmonConfigError("%s: %s" % (path, e.strerror or e)) from None
    root = parse_xml(data, path)
    local = root.tag.split("}")[-1] if isinstance(root.tag, str) else ""
    if local == "perfmon":
        fc = parse_perfmon_file(data, path)
        out = []
        if fc.host is not None:
            out.append(("host config", fc.host))
        if fc.vm is not None:
            out.append(("default VM config", fc.vm))
        return out
    try:
        kind = object_type or "vm"
        return [("VM config" if kind == "vm" else "host config", parse_config_element(root, kind))]
    except PerfmonConfigError as e:
        raise PerfmonConfigError("%s: %s" % (path, e)) from None


def _explain(var: VariableConfig, step_s: int, out: TextIO) -> None:
    def origin(tag: str) -> str:
        return "set" if tag in var.explicit else "default"

    n = max(1, -(-var.alarm_trigger_period_s // step_s))
    rows = [
        ("rrd_regex", var.rrd_regex, origin("rrd_regex")),
        ("consolidation_fn", var.consolidation_fn, origin("consolidation_fn")),
        ("alarm_trigger_level", repr(var.alarm_trigger_level), origin("alarm_trigger_level")),
        ("alarm_trigger_sense", "%s (alarm when value %s level)" % (var.alarm_trigger_sense,
                                                                   ">" if var.sense_high else "<"),
         origin("alarm_trigger_sense")),
        ("alarm_trigger_period", "%d s = %d consecutive bad step%s of %d s" % (
            var.alarm_trigger_period_s, n, "" if n == 1 else "s", step_s), origin("alarm_trigger_period")),
        ("alarm_auto_inhibit_period", "%d s" % var.alarm_auto_inhibit_period_s, origin("alarm_auto_inhibit_period")),
        ("alarm_priority", "%s (severity %s)" % (var.alarm_priority, severity_of_priority(var.alarm_priority)),
         origin("alarm_priority")),
    ]
    out.write("  variable %s\n" % var.name)
    for tag, value, where in rows:
        out.write("    %-26s %-52s (%s)\n" % (tag, value, where))
    out.write("    native rule: for: %ds at a %d s evaluation interval\n" % (periods_for(var, step_s), step_s))


def perfmon_check_main(argv: Sequence[str], out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """``perfmon-check FILE``: validate a perfmon config and explain each variable's effective settings."""
    parser = UsageParser(prog="virt-exporter perfmon-check",
                         description="Validate a perfmon config and show every variable's effective settings "
                                     "(perfmon's defaults filled in).")
    parser.add_argument("file", help="a --perfmon.config file (<perfmon>…) or one <config> document")
    parser.add_argument("--object", choices=("vm", "host"), default="vm",
                        help="object type of a bare <config> document (default vm)")
    parser.add_argument("--step", type=int, default=60, help="perfmon step in seconds (default 60)")
    try:
        args = parser.parse_args(list(argv))
        configs = _load(args.file, args.object)
    except (UsageError, PerfmonConfigError) as e:
        return fail("perfmon-check", e, err)
    out.write("%s: valid\n" % args.file)
    for label, cfg in configs:
        out.write("%s (%d variable%s):\n" % (label, len(cfg.variables), "" if len(cfg.variables) == 1 else "s"))
        for warning in cfg.warnings:
            out.write("  warning: %s\n" % warning)
        for var in cfg.variables:
            _explain(var, args.step, out)
    out.write("Per-VM configs go in the domain's metadata: virsh metadata DOMAIN --uri %s --key %s "
              "--set '<config>…</config>' --live --config\n" % (PERFMON_METADATA_NS, PERFMON_METADATA_KEY))
    return EXIT_OK


def perfmon_rules_main(argv: Sequence[str], out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """``perfmon-rules --config FILE``: print native Prometheus alerting rules for a perfmon config,
    and the Alertmanager route fragment carrying its auto-inhibit periods."""
    parser = UsageParser(prog="virt-exporter perfmon-rules",
                         description="Print native Prometheus alerting rules for a perfmon config. The exact "
                                     "path is the exporter's engine with PerfmonAlarm; see the README for where "
                                     "these rules differ from it.")
    parser.add_argument("--config", required=True, help="a --perfmon.config file or one <config> document")
    parser.add_argument("--object", choices=("vm", "host"), default="vm",
                        help="object type of a bare <config> document (default vm)")
    parser.add_argument("--domain", default=None,
                        help="restrict the VM rules to this domain (for a domain's own metadata config)")
    parser.add_argument("--step", type=int, default=60,
                        help="perfmon step = scrape and rule evaluation interval, seconds (default 60)")
    parser.add_argument("--fs-mountpoint", default="/", help="node_exporter mountpoint fs_usage watches (default /)")
    parser.add_argument("--receiver", default="perfmon", help="receiver name in the route fragment")
    parser.add_argument("--routes-file", default=None,
                        help="write the Alertmanager route fragment here instead of as a comment after the rules")
    try:
        args = parser.parse_args(list(argv))
        if not 1 <= args.step <= 3600:
            raise UsageError("--step must be 1..3600 seconds")
        loaded = _load(args.config, args.object)
    except (UsageError, PerfmonConfigError) as e:
        return fail("perfmon-rules", e, err)
    configs = [(cfg, args.domain if cfg.object_type == "vm" else None) for _label, cfg in loaded]
    rules, warnings = native_rules(configs, args.step, args.fs_mountpoint)
    for warning in warnings:
        err.write("perfmon-rules: warning: %s\n" % warning)
    routes = yaml.safe_dump(alertmanager_routes(configs, args.step, args.receiver), sort_keys=False,
                            default_flow_style=False, width=1000)
    out.write("# Generated by virt-exporter perfmon-rules from %s (step %d s).\n" % (args.config, args.step))
    out.write("# Scrape the exporter (and node_exporter for host CPU, interfaces, fs) every %d s.\n" % args.step)
    out.write(yaml.safe_dump(rules, sort_keys=False, default_flow_style=False, width=1000))
    if args.routes_file:
        try:
            with open(args.routes_file, "w") as f:
                f.write("# Alertmanager child routes for the rules above: auto-inhibit as repeat_interval.\n")
                f.write(routes)
        except OSError as e:
            return fail("perfmon-rules", "%s: %s" % (args.routes_file, e.strerror or e), err)
    else:
        out.write("# Alertmanager child routes (put under route.routes): auto-inhibit as repeat_interval.\n")
        out.write("".join("# " + line + "\n" for line in routes.splitlines()))
    return EXIT_OK


def perfmon_replay_main(argv: Sequence[str], out: TextIO = sys.stdout, err: TextIO = sys.stderr,
                        stdin: TextIO = sys.stdin) -> int:
    """``perfmon-replay --perfmon.config FILE [--perfmon.step S] [--show-inhibited] DATA.csv``: the
    alarms perfmon would send over recorded values, one JSON object per line (see perfmon/replay.py)."""
    parser = UsageParser(prog="virt-exporter perfmon-replay",
                         description="Run the perfmon engine over recorded data-source values and print the "
                                     "alarms it would send, one JSON object per line.")
    parser.add_argument("--perfmon.config", dest="config", required=True,
                        help="the --perfmon.config file (<perfmon><host>…</host><vm>…</vm></perfmon>)")
    parser.add_argument("--perfmon.step", dest="step", type=int, default=60,
                        help="seconds between an object's rows, perfmon's rrd_step (default 60)")
    parser.add_argument("--show-inhibited", action="store_true",
                        help="also print the attempts alarm_auto_inhibit_period dropped (\"inhibited\": true)")
    parser.add_argument("data", help="CSV: time,object,<data source>,… (- reads standard input)")
    try:
        args = parser.parse_args(list(argv))
        if not 1 <= args.step <= 3600:
            raise UsageError("--perfmon.step must be 1..3600 seconds")
        config = load_perfmon_file(args.config)
        rows = replay.parse_csv(replay.read_data(args.data, stdin), "<stdin>" if args.data == "-" else args.data,
                                args.step)
    except (UsageError, PerfmonConfigError, replay.ReplayError) as e:
        return fail("perfmon-replay", e, err)
    for event in replay.replay(config, rows, args.step):
        if event.sent or args.show_inhibited:
            out.write(json.dumps(replay.event_json(event, args.show_inhibited), sort_keys=False) + "\n")
    return EXIT_OK
