"""What every collector gets and how collectors are registered (node_exporter's small registry).

A collector is a thin translator: given one ScrapeContext it yields client_python metric families.
It keeps no state between scrapes and never talks to libvirt or /proc; the sampler did that.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import TYPE_CHECKING, Callable, Dict, Iterable, Mapping, Optional, Tuple

from prometheus_client.metrics_core import Metric

from ..sample import BlockEventCounts, DomainInfo, GuestAgentSnapshot, JobSnapshot, NumaSnapshot, Sample

if TYPE_CHECKING:
    from ..perfmon.engine import EngineSnapshot


def keeps_every_domain(name: str) -> bool:
    return True


@dataclasses.dataclass(frozen=True)
class ScrapeContext:
    """Inputs of one scrape.

    ``current`` is the sample this scrape serves; ``previous`` the sample before it (None on the first
    sample after start), for rates. ``domain_info`` maps UUID → the parsed domain XML as of
    ``current``. ``options`` holds this collector's ``--collector.<name>.<option>``
    values. ``numa``, ``block_events``, ``perfmon``, ``guest_agent`` and ``jobs`` are the latest snapshots of
    the subsystems that read in the background (None when the subsystem is off): a collector only reads them.

    With ``--libvirt.domain-include``/``-exclude``, ``current`` and ``previous`` hold only the exported
    domains; ``whole_pair()`` gives every domain, for what is about the whole host (the hypervisor
    overhead), and ``keeps_domain(name)`` judges domains known by name only.
    """

    current: Sample
    previous: Optional[Sample]
    domain_info: Mapping[str, DomainInfo]
    options: Mapping[str, object] = dataclasses.field(default_factory=dict)
    numa: Optional[NumaSnapshot] = None
    block_events: Optional[BlockEventCounts] = None
    perfmon: Optional["EngineSnapshot"] = None
    guest_agent: Optional[GuestAgentSnapshot] = None
    jobs: Optional[JobSnapshot] = None
    unfiltered: Optional[Tuple[Optional[Sample], Sample]] = None
    keeps_domain: Callable[[str], bool] = keeps_every_domain

    def whole_pair(self) -> Tuple[Optional[Sample], Sample]:
        """(previous, current) with every domain, exported or not."""
        return self.unfiltered if self.unfiltered is not None else (self.previous, self.current)


@dataclasses.dataclass(frozen=True)
class Option:
    """A ``--collector.<collector>.<name>`` flag: ``type`` converts the string (int, float, str, or
    bool for a switch that takes no value), ``default`` is used when the flag is absent. A
    ``repeatable`` option collects every occurrence into a tuple (its default is a tuple too)."""

    name: str
    type: Callable[[str], object]
    default: object
    help: str
    repeatable: bool = False


class Background(enum.Enum):
    """A reader that works in the background for a collector, between samples; the app starts those
    the enabled collectors need and their latest readings reach the collectors in ScrapeContext."""

    NUMA_PLACEMENT = "per-domain NUMA placement from /proc (ScrapeContext.numa)"
    BLOCK_EVENTS = "block threshold and I/O error events (ScrapeContext.block_events)"
    GUEST_AGENT = "guest agent queries (ScrapeContext.guest_agent)"
    JOB_STATS = "statistics of running jobs (ScrapeContext.jobs)"


@dataclasses.dataclass(frozen=True)
class CollectorSpec:
    """A registered collector: its flag name, whether it is on by default, and what it needs, as
    node_exporter's factories declare it: the libvirt stats groups (so the sampler asks only for
    those), the per-sample listings (``reads``, kinds of source/listings.py), the QEMU pids, a
    background reader; and whether it has something true to say without libvirt
    (``without_libvirt``: it runs when the sample is down). ``collect`` yields its families."""

    name: str
    collect: Callable[[ScrapeContext], Iterable[Metric]]
    default_enabled: bool = True
    stats_groups: Tuple[str, ...] = ()
    help: str = ""
    options: Tuple[Option, ...] = ()
    reads: Tuple[str, ...] = ()
    qemu_pids: bool = False
    background: Optional[Background] = None
    without_libvirt: bool = False


REGISTRY: Dict[str, CollectorSpec] = {}


CollectFn = Callable[[ScrapeContext], Iterable[Metric]]


def register(name: str, *, default_enabled: bool = True, stats_groups: Tuple[str, ...] = (),
             help: str = "", options: Tuple[Option, ...] = (), reads: Tuple[str, ...] = (),
             qemu_pids: bool = False, background: Optional[Background] = None,
             without_libvirt: bool = False) -> Callable[[CollectFn], CollectFn]:
    """Decorator: register ``collect(ctx)`` under ``name`` (the ``--collector.<name>`` flag)."""

    def wrap(fn: Callable[[ScrapeContext], Iterable[Metric]]) -> Callable[[ScrapeContext], Iterable[Metric]]:
        if name in REGISTRY:
            raise ValueError("collector registered twice: " + name)
        REGISTRY[name] = CollectorSpec(name, fn, default_enabled, tuple(stats_groups), help, tuple(options),
                                       tuple(reads), qemu_pids, background, without_libvirt)
        return fn

    return wrap
