"""Wiring: from parsed flags to a running exporter (connection, sampler, collectors, HTTP server).

Everything that can be wrong in the operator's input is checked in ``App.__init__`` and raised as a
UsageError (one line, exit 2); ``start()`` only starts threads.
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import functools
import logging
import os
import threading
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Sequence, Tuple

from prometheus_client import CollectorRegistry, ProcessCollector

from .calc.watermark import thresholds_due
from .collectors.base import Background, CollectorSpec
from .collectors.watermark import arms_thresholds, policy_from_options
from .domain_filter import DomainFilter, compile_pattern
from .exporter import Exporter
from .metadata_labels import LabelSpec, duplicate_label
from .options import UsageError, collector_options, enabled_collectors, listings, stats_groups
from .sample import Sample
from .sampler import Sampler, SamplerOptions
from .server import ExporterHTTPServer, parse_listen_address
from .snapshot import BackgroundReadings
from .source.connection import Connection
from .source.domxml import DomainXMLCache
from .source.host import tcp_listener
from .source.reader import SampleReader

if TYPE_CHECKING:
    from .perfmon.engine import PerfmonEngine
    from .source.block_events import BlockEvents
    from .source.guest_agent import GuestAgentReader
    from .source.jobs import DomainJobs
    from .source.numa import NumaPlacementReader
    from .webconfig import WebConfig

log = logging.getLogger(__name__)


def default_concurrency() -> int:
    """Concurrent bulk calls. libvirtd's time per domain is mostly QEMU monitor round trips (seven
    per running domain for the default groups), which wait rather than compute, so shares pay beyond
    the core count: on 2 cores 4 shares were 6-14 % faster than 2, and 6 within +-8 % of 4
    (bench/bench_compare.py). More cores, more shares, up to 8: each is a connection of its own."""
    return max(4, min(8, os.cpu_count() or 1))


@dataclasses.dataclass
class BackgroundReaders:
    """What reads in the background, beside the sampler (None when off). ``jobs`` tracks every job
    (the stats calls must leave out a domain libvirtd is closing after a migration) but gives a
    reading only when a collector asked for job statistics."""

    numa: Optional["NumaPlacementReader"] = None
    block_events: Optional["BlockEvents"] = None
    perfmon: Optional["PerfmonEngine"] = None
    guest_agent: Optional["GuestAgentReader"] = None
    jobs: Optional["DomainJobs"] = None

    def readings(self) -> BackgroundReadings:
        jobs = self.jobs if self.jobs is not None and self.jobs.read_stats else None
        return BackgroundReadings(numa=self.numa.snapshot() if self.numa else None,
                                  block_events=self.block_events.snapshot() if self.block_events else None,
                                  perfmon=self.perfmon.snapshot() if self.perfmon else None,
                                  guest_agent=self.guest_agent.snapshot() if self.guest_agent else None,
                                  jobs=jobs.snapshot() if jobs else None)

    def all(self) -> List[Any]:
        """Every reader that is on, in start order."""
        return [r for r in (self.numa, self.block_events, self.perfmon, self.guest_agent, self.jobs) if r is not None]


class App:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.collectors = enabled_collectors(args)
        self.options = collector_options(args)
        web_config = _web_config(args.web_config_file)
        self.domain_filter = _domain_filter(args)
        concurrency = args.concurrency or default_concurrency()
        # Read-only unless the operator asked the exporter to arm block thresholds (a write call).
        read_write = arms_thresholds({c.name for c in self.collectors}, self.options)
        # The collector that needs each background reader, and so gives its options.
        needed = {spec.background: spec for spec in self.collectors if spec.background is not None}
        self.background = BackgroundReaders()
        if Background.GUEST_AGENT in needed:
            self.background.guest_agent = guest_agent_reader(args.uri, needed[Background.GUEST_AGENT], self.options)
        # A lane per concurrent stats call plus the primary one (events, host calls).
        self.connection = Connection(args.uri, read_only=not read_write, lanes=concurrency + 1)
        self.xml_cache = DomainXMLCache(metadata_label_specs(self.collectors, self.options))
        self.background.jobs = self._domain_jobs(needed.get(Background.JOB_STATS), args.timeout_s)
        reader = SampleReader(self.connection, self.xml_cache, stats_groups(self.collectors), args.backing,
                              concurrency, read_qemu_pids=any(spec.qemu_pids for spec in self.collectors),
                              listings=listings(self.collectors), closing=self.background.jobs.closing)
        self.sampler = Sampler(reader, SamplerOptions(min_interval_s=args.min_interval_s, timeout_s=args.timeout_s),
                               domain_info=self.xml_cache.snapshot, connection_health=self.connection.health,
                               background=self.background.readings)
        # Events: the XML cache re-reads what changed; a stopped or undefined domain leaves the sample.
        self.xml_cache.register_events(self.connection.on_event)
        self.xml_cache.subscribe(self.sampler.on_lifecycle)
        if Background.NUMA_PLACEMENT in needed:
            self.background.numa = numa_reader(needed[Background.NUMA_PLACEMENT], self.options)
        if Background.BLOCK_EVENTS in needed:
            from .source.block_events import BlockEvents

            policy = policy_from_options(self._options_of(needed[Background.BLOCK_EVENTS]))
            self.background.block_events = BlockEvents(
                self.connection, self.xml_cache, functools.partial(thresholds_due, policy),
                arm_thresholds=read_write, call_timeout_s=args.timeout_s)
        self.background.perfmon = self._perfmon_engine(args) if args.perfmon_config else None
        self.sampler.subscribe(self._on_sample)
        static = CollectorRegistry(auto_describe=False)
        ProcessCollector(registry=static)
        self.exporter = Exporter(self.sampler, self.collectors, self.options, static, domain_filter=self.domain_filter)
        self.server = _server(args, self.exporter, web_config)
        self._threads: List[threading.Thread] = []

    def _options_of(self, spec: CollectorSpec) -> Mapping[str, Any]:
        return self.options[spec.name]

    def _domain_jobs(self, job_stats: Optional[CollectorSpec], call_timeout_s: float) -> "DomainJobs":
        """Always: the stats calls must leave out domains libvirtd is tearing down after a migration
        (events only); the job statistics are read only for a collector that asked for them."""
        from .source.jobs import DomainJobs

        if job_stats is None:
            return DomainJobs(self.connection, self.xml_cache, read_stats=False, call_timeout_s=call_timeout_s)
        try:
            return DomainJobs(self.connection, self.xml_cache, read_stats=True,
                              interval_s=self._options_of(job_stats)["interval"], call_timeout_s=call_timeout_s)
        except ValueError as e:
            raise UsageError("--collector.%s.interval: %s" % (job_stats.name, e)) from None

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
        readers = self.background
        if readers.jobs is not None:
            readers.jobs.observe(sample)
        exported = self.domain_filter.apply_to(sample)
        if readers.numa is not None:
            readers.numa.set_targets(numa_targets(exported))
        if readers.guest_agent is not None:
            readers.guest_agent.set_targets({u: d.name for u, d in exported.domains.items() if d.active})
        if readers.block_events is not None and readers.block_events.arm_thresholds:
            readers.block_events.observe(exported, self.xml_cache.snapshot())

    def start(self) -> None:
        # Not waiting for libvirtd: when it is down we serve libvirt_up 0 and keep reconnecting.
        self.connection.start(wait_s=2.0)
        for reader in self.background.all():
            reader.start()
        t = threading.Thread(target=self.server.serve_forever, name="http", daemon=True)
        t.start()
        self._threads.append(t)

    def stop(self) -> None:
        for reader in reversed(self.background.all()):
            reader.stop()
        self.server.shutdown()
        self.server.server_close()
        self.sampler.stop()
        self.connection.stop()


def _web_config(path: Optional[str]) -> Optional["WebConfig"]:
    if not path:
        return None
    from .webconfig import WebConfigError, load_web_config

    try:
        return load_web_config(path)
    except WebConfigError as e:
        raise UsageError(str(e)) from None


def _domain_filter(args: argparse.Namespace) -> DomainFilter:
    try:
        return DomainFilter(compile_pattern("--libvirt.domain-include", args.domain_include),
                            compile_pattern("--libvirt.domain-exclude", args.domain_exclude))
    except ValueError as e:
        raise UsageError(str(e)) from None


def _server(args: argparse.Namespace, exporter: Exporter, web_config: Optional["WebConfig"]) -> ExporterHTTPServer:
    try:
        return ExporterHTTPServer(args.listen_address, exporter, args.telemetry_path, web_config, args.max_requests)
    except ValueError as e:
        raise UsageError(str(e)) from None
    except OSError as e:
        raise UsageError("cannot listen on %s: %s" % (args.listen_address, _bind_failure(args.listen_address, e))) \
            from None


def numa_reader(spec: CollectorSpec, options: Mapping[str, Mapping[str, Any]]) -> "NumaPlacementReader":
    """The NUMA placement reader, at the interval the collector that needs it was given."""
    from .source.numa import NumaPlacementReader

    try:
        return NumaPlacementReader(interval_s=options[spec.name]["interval"])
    except ValueError as e:
        raise UsageError("--collector.%s.interval: %s" % (spec.name, e)) from None


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


def metadata_label_specs(collectors: Sequence[CollectorSpec],
                         options: Mapping[str, Mapping[str, Any]]) -> Tuple[LabelSpec, ...]:
    """The label specs of the enabled collectors' ``metadata-label`` option (the domain collector
    has it); a label name given twice is a UsageError."""
    specs: Tuple[LabelSpec, ...] = ()
    for collector in collectors:
        specs += tuple(options[collector.name].get("metadata-label", ()))
        twice = duplicate_label(specs)
        if twice is not None:
            raise UsageError("--collector.%s.metadata-label: label %s given twice" % (collector.name, twice))
    return specs


def guest_agent_reader(uri: str, spec: CollectorSpec, options: Mapping[str, Mapping[str, Any]]) -> "GuestAgentReader":
    """The guest agent's background reader, on a read-write connection of its own (libvirt refuses
    the agent call on a read-only one), with the options of the collector that needs it."""
    from .source.guest_agent import GuestAgentReader

    opts = options[spec.name]
    try:
        return GuestAgentReader(uri, interval_s=opts["interval"], timeout_s=opts["timeout"])
    except ValueError as e:
        raise UsageError("--collector.%s: %s" % (spec.name, e)) from None


def numa_targets(sample: Sample) -> Dict[str, Tuple[str, Optional[int]]]:
    """The NUMA reader's targets: every running domain, with its QEMU pid when known."""
    return {uuid: (dom.name, sample.qemu_pids.get(uuid)) for uuid, dom in sample.domains.items() if dom.active}
