"""Wiring: from parsed flags to a running exporter (connection, sampler, collectors, HTTP server).

Everything that can be wrong in the operator's input is checked in ``App.__init__`` and raised as a
UsageError (one line, exit 2); ``start()`` only starts threads.
"""

from __future__ import annotations

import argparse
import errno
import functools
import logging
import os
import threading
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Set, Tuple

from prometheus_client import CollectorRegistry, ProcessCollector

from .calc.watermark import thresholds_due
from .collectors.watermark import arms_thresholds, policy_from_options
from .domain_filter import DomainFilter, compile_pattern
from .exporter import Exporter, Subsystems
from .metadata_labels import LabelSpec, duplicate_label
from .options import UsageError, collector_options, enabled_collectors, listings, stats_groups
from .sample import Sample
from .sampler import Sampler, SamplerOptions
from .server import ExporterHTTPServer, parse_listen_address
from .source.connection import Connection
from .source.domxml import DomainXMLCache
from .source.host import tcp_listener

if TYPE_CHECKING:
    from .perfmon.engine import PerfmonEngine
    from .source.guest_agent import GuestAgentReader

log = logging.getLogger(__name__)


def default_concurrency() -> int:
    """Concurrent bulk calls. libvirtd's time per domain is mostly QEMU monitor round trips (seven
    per running domain for the default groups), which wait rather than compute, so shares pay beyond
    the core count: on 2 cores 4 shares were 6-14 % faster than 2, and 6 within +-8 % of 4
    (bench/bench_compare.py). More cores, more shares, up to 8: each is a connection of its own."""
    return max(4, min(8, os.cpu_count() or 1))


class App:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.collectors = enabled_collectors(args)
        self.options = collector_options(args)
        groups = stats_groups(self.collectors)
        web_config = None
        if args.web_config_file:
            from .webconfig import WebConfigError, load_web_config

            try:
                web_config = load_web_config(args.web_config_file)
            except WebConfigError as e:
                raise UsageError(str(e)) from None
        try:
            domain_filter = DomainFilter(compile_pattern("--libvirt.domain-include", args.domain_include),
                                         compile_pattern("--libvirt.domain-exclude", args.domain_exclude))
        except ValueError as e:
            raise UsageError(str(e)) from None
        concurrency = args.concurrency or default_concurrency()
        enabled = {c.name for c in self.collectors}
        # Read-only unless the operator asked the exporter to arm block thresholds (a write call).
        read_write = arms_thresholds(enabled, self.options)
        self.guest_agent = guest_agent_reader(args.uri, self.options) if "guest_agent" in enabled else None
        # A lane per concurrent stats call plus the primary one (events, host calls).
        self.connection = Connection(args.uri, read_only=not read_write, lanes=concurrency + 1)
        self.xml_cache = DomainXMLCache(metadata_label_specs(enabled, self.options))
        self.sampler = Sampler(self.connection, self.xml_cache, SamplerOptions(
            groups=groups, backing=args.backing, min_interval_s=args.min_interval_s, timeout_s=args.timeout_s,
            concurrency=concurrency, read_qemu_pids="numa" in enabled))
        self.sampler.reader.read_listings(listings(self.collectors))
        self.numa_reader = None
        if "numa" in enabled:
            from .source.numa import NumaPlacementReader

            try:
                self.numa_reader = NumaPlacementReader(interval_s=self.options["numa"]["interval"])
            except ValueError as e:
                raise UsageError("--collector.numa.interval: %s" % e) from None
        self.block_events = None
        if "watermark" in enabled:
            from .source.block_events import BlockEvents

            policy = policy_from_options(self.options["watermark"])
            self.block_events = BlockEvents(
                self.connection, self.xml_cache, functools.partial(thresholds_due, policy),
                arm_thresholds=read_write, call_timeout_s=args.timeout_s)
        self.perfmon = self._perfmon_engine(args) if args.perfmon_config else None
        # Always: the stats calls must leave out domains libvirtd is tearing down after a migration
        # (events only); the job statistics are read only for the job collector.
        from .source.jobs import DomainJobs

        try:
            self.jobs = DomainJobs(self.connection, self.xml_cache, read_stats="job" in enabled,
                                   interval_s=self.options["job"]["interval"], call_timeout_s=args.timeout_s)
        except ValueError as e:
            raise UsageError("--collector.job.interval: %s" % e) from None
        self.sampler.reader.stats.closing = self.jobs.closing
        self.domain_filter = domain_filter
        self.sampler.subscribe(self._on_sample)
        static = CollectorRegistry(auto_describe=False)
        ProcessCollector(registry=static)
        self.exporter = Exporter(self.sampler, self.collectors, self.options,
                                 Subsystems(self.numa_reader, self.block_events, self.perfmon, self.guest_agent,
                                            self.jobs if "job" in enabled else None), static,
                                 domain_filter=domain_filter)
        try:
            self.server = ExporterHTTPServer(args.listen_address, self.exporter, args.telemetry_path,
                                             web_config, args.max_requests)
        except ValueError as e:
            raise UsageError(str(e)) from None
        except OSError as e:
            raise UsageError("cannot listen on %s: %s" % (args.listen_address, _bind_failure(args.listen_address, e))) \
                from None
        self._threads: List[threading.Thread] = []

    def _perfmon_engine(self, args: argparse.Namespace) -> "PerfmonEngine":
        from .perfmon.config import PerfmonConfigError, load_perfmon_file
        from .perfmon.engine import PerfmonEngine  # noqa: F811 - imported for typing above only

        try:
            return PerfmonEngine(self.sampler.get, self.xml_cache.snapshot, load_perfmon_file(args.perfmon_config),
                                 args.perfmon_step, fs_path=args.perfmon_fs_path,
                                 alarm_retention_s=args.perfmon_alarm_retention_s)
        except (PerfmonConfigError, ValueError) as e:
            raise UsageError(str(e)) from None

    def _on_sample(self, sample: Sample) -> None:
        """Every new sample names what the background readers work on: the running domains whose
        NUMA placement to read, the thin volumes whose write thresholds to arm (the exported
        domains only). Both only queue work; a failed sample changes nothing."""
        if not sample.up:
            return
        self.jobs.observe(sample)
        exported = self.domain_filter.apply_to(sample)
        if self.numa_reader is not None:
            self.numa_reader.set_targets(numa_targets(exported))
        if self.guest_agent is not None:
            self.guest_agent.set_targets({u: d.name for u, d in exported.domains.items() if d.active})
        if self.block_events is not None and self.block_events.arm_thresholds:
            self.block_events.observe(exported, self.xml_cache.snapshot())

    def start(self) -> None:
        # Not waiting for libvirtd: when it is down we serve libvirt_up 0 and keep reconnecting.
        self.connection.start(wait_s=2.0)
        for subsystem in (self.numa_reader, self.block_events, self.perfmon, self.guest_agent, self.jobs):
            if subsystem is not None:
                subsystem.start()
        t = threading.Thread(target=self.server.serve_forever, name="http", daemon=True)
        t.start()
        self._threads.append(t)

    def stop(self) -> None:
        for subsystem in (self.jobs, self.guest_agent, self.perfmon, self.block_events, self.numa_reader):
            if subsystem is not None:
                subsystem.stop()
        self.server.shutdown()
        self.server.server_close()
        self.sampler.stop()
        self.connection.stop()


def _bind_failure(address: str, e: OSError) -> str:
    """Why the listen address cannot be had, and who holds it when that can be seen. Exit 2 like
    other bad start-up input (node_exporter exits 1): the operator must pick another address or stop
    the other process, so with RestartPreventExitStatus=2 systemd does not restart into it again."""
    if e.errno != errno.EADDRINUSE:
        return e.strerror or str(e)
    holder = tcp_listener(parse_listen_address(address)[1])
    return ("address already in use by %s" % (holder or "another process")
            + "; Debian's prometheus-libvirt-exporter also listens on :9177 (stop it, or pass another"
            " --web.listen-address)")


def metadata_label_specs(enabled: Set[str], options: Dict[str, Dict[str, Any]]) -> Tuple[LabelSpec, ...]:
    """The --collector.domain.metadata-label specs (none with the domain collector off); a label name
    given twice is a UsageError."""
    specs = tuple(options["domain"]["metadata-label"]) if "domain" in enabled else ()
    twice = duplicate_label(specs)
    if twice is not None:
        raise UsageError("--collector.domain.metadata-label: label %s given twice" % twice)
    return specs


def guest_agent_reader(uri: str, options: Dict[str, Dict[str, Any]]) -> "GuestAgentReader":
    """The guest agent's background reader, on a read-write connection of its own (libvirt refuses
    the agent call on a read-only one)."""
    from .source.guest_agent import GuestAgentReader

    opts = options["guest_agent"]
    try:
        return GuestAgentReader(uri, interval_s=opts["interval"], timeout_s=opts["timeout"])
    except ValueError as e:
        raise UsageError("--collector.guest_agent: %s" % e) from None


def numa_targets(sample: Sample) -> Dict[str, Tuple[str, Optional[int]]]:
    """The NUMA reader's targets: every running domain, with its QEMU pid when known."""
    return {uuid: (dom.name, sample.qemu_pids.get(uuid)) for uuid, dom in sample.domains.items() if dom.active}
