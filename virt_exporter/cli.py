"""Command line: flags in node_exporter's style, start-up validation, wiring, clean shutdown.

Bad input at start-up (an unknown flag, a malformed URI, a listen address that is taken, a broken
web-config or perfmon file) is one readable line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import signal
import sys
import threading
import time
import urllib.parse
from typing import Any, Callable, Optional, Sequence, TypeVar

from . import __version__
from .collectors import base, load_all
from .options import option_dest
from .perfmon.engine import DEFAULT_ALARM_RETENTION_S
from .usage import UsageError, UsageParser, fail

log = logging.getLogger("virt_exporter")

_URI_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://[^\s]*$")
N = TypeVar("N", int, float)


def _valid_uri(uri: str) -> bool:
    """scheme://[host[:port]]/path — libvirt would refuse anything else only at connect time, and
    retry forever; an operator's typo must stop the start instead."""
    if not _URI_RE.match(uri):
        return False
    try:
        _ = urllib.parse.urlsplit(uri).port  # raises on an unbalanced [ or a port out of range
    except ValueError:
        return False
    return True


def _number(text: str, kind: Callable[[str], N], what: str, in_range: Callable[[N], bool], bound: str) -> N:
    """``text`` as an int or float in range, else the error argparse reports for the flag."""
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError("not %s: %r" % (what, text)) from None
    if not in_range(value) or value == float("inf"):  # "not in range": nan fails every comparison
        raise argparse.ArgumentTypeError("must be %s: %r" % (bound, text))
    return value


def _positive_float(text: str) -> float:
    return _number(text, float, "a number", lambda v: v > 0, "a number > 0")


def _non_negative_float(text: str) -> float:
    return _number(text, float, "a number", lambda v: v >= 0, "a number >= 0")


def _non_negative_int(text: str) -> int:
    return _number(text, int, "an integer", lambda v: v >= 0, ">= 0")


def build_parser() -> argparse.ArgumentParser:
    p = UsageParser(prog="virt-exporter", description="Prometheus exporter for libvirt/KVM hosts.",
                    allow_abbrev=False)
    p.add_argument("--version", action="version", version="virt_exporter " + __version__)
    web = p.add_argument_group("web")
    web.add_argument("--web.listen-address", dest="listen_address", default=":9177",
                     help="[host]:port to listen on (default :9177, the port registered for libvirt exporters)")
    web.add_argument("--web.telemetry-path", dest="telemetry_path", default="/metrics",
                     help="path under which to expose metrics (default /metrics)")
    web.add_argument("--web.config.file", dest="web_config_file", default=None,
                     help="exporter-toolkit web config (TLS, basic auth), as node_exporter's")
    web.add_argument("--web.max-requests", dest="max_requests", type=_non_negative_int, default=40,
                     help="maximum scrapes rendered at once, 0 for no limit; excess gets 503 (default 40)")
    lv = p.add_argument_group("libvirt")
    lv.add_argument("--libvirt.uri", dest="uri", default="qemu:///system",
                    help="libvirt connection URI (default qemu:///system)")
    lv.add_argument("--libvirt.timeout", dest="timeout_s", type=_positive_float, default=5.0,
                    help="upper bound of the libvirt part of a scrape, seconds; lowered to Prometheus's "
                         "X-Prometheus-Scrape-Timeout-Seconds when a scrape carries it (default 5)")
    lv.add_argument("--libvirt.min-interval", dest="min_interval_s", type=_non_negative_float, default=1.0,
                    help="a scrape within this many seconds of the last sample reuses it (default 1)")
    lv.add_argument("--libvirt.concurrency", dest="concurrency", type=_non_negative_int, default=0,
                    help="concurrent bulk stats calls the domain list is split across, each on its own "
                         "connection; 0 = the CPU count, at least 4 and at most 8 (default 0)")
    lv.add_argument("--libvirt.domain-include", dest="domain_include", default=None, metavar="REGEX",
                    help="export only domains whose name this regular expression matches (anywhere in the "
                         "name: anchor with ^...$)")
    lv.add_argument("--libvirt.domain-exclude", dest="domain_exclude", default=None, metavar="REGEX",
                    help="do not export domains whose name this regular expression matches; the host's "
                         "hypervisor overhead still accounts for them")
    lv.add_argument("--libvirt.backing-chain", dest="backing", action=argparse.BooleanOptionalAction,
                    default=True, help="ask for every backing layer of each disk (default on)")
    pm = p.add_argument_group("perfmon")
    pm.add_argument("--perfmon.config", dest="perfmon_config", default=None,
                    help="perfmon XML (<perfmon><host><config>…</config></host><vm><config>…</config></vm>"
                         "</perfmon>); enables the perfmon alarm engine")
    pm.add_argument("--perfmon.step", dest="perfmon_step", type=int, default=60,
                    help="seconds between perfmon engine steps, perfmon's rrd_step (default 60; perfmon "
                         "allows 5 or 60, this engine 1..3600)")
    pm.add_argument("--perfmon.alarm-retention", dest="perfmon_alarm_retention_s", type=int,
                    default=DEFAULT_ALARM_RETENTION_S,
                    help="seconds each sent alarm stays exposed as its own libvirt_perfmon_alarm_value series; "
                         "more than three scrape intervals, so one failed scrape loses nothing (default %d)"
                         % DEFAULT_ALARM_RETENTION_S)
    pm.add_argument("--perfmon.fs-path", dest="perfmon_fs_path", default="/",
                    help="path whose filesystem fs_usage measures (default /)")
    lg = p.add_argument_group("logging")
    lg.add_argument("--log.level", dest="log_level", default="info", choices=["debug", "info", "warn", "error"])
    lg.add_argument("--log.format", dest="log_format", default="logfmt", choices=["logfmt", "json"])
    col = p.add_argument_group("collectors")
    for spec in sorted(base.REGISTRY.values(), key=lambda s: s.name):
        state = "enabled" if spec.default_enabled else "disabled"
        col.add_argument("--collector." + spec.name, dest="collector_" + spec.name, action="store_true",
                         default=None, help="enable the %s collector: %s (default %s)" % (spec.name, spec.help, state))
        col.add_argument("--no-collector." + spec.name, dest="collector_" + spec.name, action="store_false",
                         default=None, help=argparse.SUPPRESS)
        for opt in spec.options:
            flag = "--collector.%s.%s" % (spec.name, opt.name)
            dest = option_dest(spec.name, opt.name)
            if opt.repeatable:
                col.add_argument(flag, dest=dest, type=opt.type, action="append", default=None,
                                 help="%s (repeatable)" % opt.help)
            elif opt.type is bool:
                col.add_argument(flag, dest=dest, action=argparse.BooleanOptionalAction, default=opt.default,
                                 help=opt.help)
            else:
                col.add_argument(flag, dest=dest, type=opt.type, default=opt.default,
                                 help="%s (default %s)" % (opt.help, opt.default))
    return p


class LogfmtFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        msg = record.getMessage()
        if record.exc_info:
            # Tracebacks stay in the exporter's log, one record; never in an HTTP response.
            msg += " | " + self.formatException(record.exc_info).replace("\n", " | ")
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + ".%03dZ" % record.msecs
        level = {"WARNING": "warn"}.get(record.levelname, record.levelname.lower())
        return 'ts=%s level=%s caller=%s msg=%s' % (ts, level, record.name, json.dumps(msg))


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {"ts": record.created, "level": record.levelname.lower(), "caller": record.name,
               "msg": record.getMessage()}
        if record.exc_info:
            out["error"] = self.formatException(record.exc_info)
        return json.dumps(out)


def setup_logging(level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JSONFormatter() if fmt == "json" else LogfmtFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel({"warn": logging.WARNING}.get(level, getattr(logging, level.upper(), logging.INFO)))


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("perfmon-check", "perfmon-rules", "perfmon-replay"):
        from .perfmon import cli as perfmon_cli

        entry = {"perfmon-check": perfmon_cli.perfmon_check_main, "perfmon-rules": perfmon_cli.perfmon_rules_main,
                 "perfmon-replay": perfmon_cli.perfmon_replay_main}[argv[0]]
        return entry(argv[1:])
    if argv and argv[0] == "mixin":
        from .mixin import cli as mixin_cli

        return mixin_cli.main(argv[1:])
    load_all()
    try:
        args = build_parser().parse_args(argv)
        if not _valid_uri(args.uri):
            raise UsageError("--libvirt.uri %r is not a libvirt URI (want e.g. qemu:///system, "
                             "qemu+ssh://host/system)" % args.uri)
        if not args.telemetry_path.startswith("/"):
            raise UsageError("--web.telemetry-path must start with /: %r" % args.telemetry_path)
        from .app import App

        app = App(args)
    except UsageError as e:
        return fail("virt-exporter", e)
    setup_logging(args.log_level, args.log_format)
    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        log.info("received %s, shutting down", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    app.start()
    log.info("listening on %s (libvirt %s, collectors: %s)", args.listen_address, args.uri,
             ",".join(c.name for c in app.collectors))
    while not stop.wait(1.0):
        pass
    app.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
