"""Which part of the previous sample a rate may be taken against: not across a long gap, and not
across a domain's restart."""

from __future__ import annotations

import dataclasses
from typing import Optional

from ..sample import Sample

# An older previous sample gives no rates: after a long outage the first sample is a new baseline.
PREVIOUS_MAX_GAP_S = 600.0


def comparable_previous(previous: Optional[Sample], current: Sample) -> Optional[Sample]:
    """``previous`` as far as rates against ``current`` are valid, or None.

    None when there is no previous sample or it is older than PREVIOUS_MAX_GAP_S. Otherwise the same
    sample without the domains that restarted in between — a new domain ID (libvirt numbers every
    start) or, where IDs are unknown, a cpu.time that went backwards — so no calculator can take a
    delta across a restart. Across a libvirtd restart running domains keep their IDs and counters:
    their rates go on.
    """
    if previous is None or not previous.up:
        return None
    if not 0 < current.monotonic_s - previous.monotonic_s <= PREVIOUS_MAX_GAP_S:
        return None
    prev_ids, cur_ids = previous.domain_ids, current.domain_ids
    drop = []
    for uuid, cur in current.domains.items():
        prev = previous.domains.get(uuid)
        if prev is None or not (prev.active and cur.active):
            continue
        prev_id, cur_id = prev_ids.get(uuid), cur_ids.get(uuid)
        if prev_id is not None and cur_id is not None and prev_id != cur_id:
            drop.append(uuid)
            continue
        prev_ns, cur_ns = prev.stats.get("cpu.time"), cur.stats.get("cpu.time")
        if prev_ns is not None and cur_ns is not None and cur_ns < prev_ns:
            drop.append(uuid)
    if not drop:
        return previous
    return dataclasses.replace(previous, domains={u: d for u, d in previous.domains.items() if u not in drop})
