"""What the sampler publishes: one sample with everything a scrape reads beside it.

Plain data, like the Sample: the sampler (sampler.py) builds it, the exporter turns it into each
collector's ScrapeContext.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Mapping, Optional

from .sample import (
    BlockEventCounts,
    ConnectionHealth,
    DomainInfo,
    GuestAgentSnapshot,
    JobSnapshot,
    NumaSnapshot,
    Sample,
)

if TYPE_CHECKING:
    from .perfmon.engine import EngineSnapshot


@dataclasses.dataclass(frozen=True)
class BackgroundReadings:
    """The latest reading of each subsystem that reads in the background (None when it is off)."""

    numa: Optional[NumaSnapshot] = None
    block_events: Optional[BlockEventCounts] = None
    perfmon: Optional["EngineSnapshot"] = None
    guest_agent: Optional[GuestAgentSnapshot] = None
    jobs: Optional[JobSnapshot] = None


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """One published sample (``current``; ``previous`` is the last comparable good one, None after a
    start or an outage), the domain XML as of that sample (UUID → DomainInfo), the connection's
    health and the background readings as of the request."""

    current: Sample
    previous: Optional[Sample] = None
    domain_info: Mapping[str, DomainInfo] = dataclasses.field(default_factory=dict)
    connection: ConnectionHealth = ConnectionHealth()
    background: BackgroundReadings = BackgroundReadings()
