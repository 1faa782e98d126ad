"""vCPU steal from two samples: the share of wall time a domain's vCPUs waited in the host's run queue.

Pure, no I/O. The recording rule ``domain:libvirt_vcpu_steal:ratio`` (mixin/rules.py) is the same
figure in PromQL, from the exported ``libvirt_domain_vcpu_delay_seconds_total``.
"""

from __future__ import annotations

from typing import Optional

from ..sample import DomainStats
from .mhz import NS_PER_S


def vcpu_steal_ratio(previous: Optional[DomainStats], current: DomainStats, interval_s: float) -> Optional[float]:
    """Δvcpu.N.delay ns / (interval_s × 1e9), averaged over the vCPUs that have a delay in both samples.

    A vCPU whose delay went backwards (the domain restarted) is left out; None without a previous
    reading, for a domain that is not running, an interval that is not positive, or no vCPU to compare.
    """
    if previous is None or interval_s <= 0 or not current.active:
        return None
    before = {d["index"]: d.get("delay") for d in previous.devices("vcpu")}
    shares = []
    for dev in current.devices("vcpu"):
        then, now = before.get(dev["index"]), dev.get("delay")
        if isinstance(then, int) and isinstance(now, int) and now >= then:
            shares.append((now - then) / NS_PER_S / interval_s)
    return sum(shares) / len(shares) if shares else None
