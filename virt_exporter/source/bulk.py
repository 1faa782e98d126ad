"""The bulk domain stats call: which groups, which flags, and what "incomplete" looks like."""

from __future__ import annotations

from sys import intern
from typing import Any, Dict, Iterable, List, NamedTuple, Optional, Sequence, Tuple

import libvirt

# libvirt stats group name → VIR_DOMAIN_STATS_* bit.
GROUP_FLAGS: Dict[str, int] = {
    "state": libvirt.VIR_DOMAIN_STATS_STATE,
    "cpu-total": libvirt.VIR_DOMAIN_STATS_CPU_TOTAL,
    "balloon": libvirt.VIR_DOMAIN_STATS_BALLOON,
    "vcpu": libvirt.VIR_DOMAIN_STATS_VCPU,
    "interface": libvirt.VIR_DOMAIN_STATS_INTERFACE,
    "block": libvirt.VIR_DOMAIN_STATS_BLOCK,
    "iothread": libvirt.VIR_DOMAIN_STATS_IOTHREAD,
}

# The key whose absence in a running domain's entry means the group did not answer. A stuck QEMU
# comes back with state, cpu, balloon current/maximum, basic vcpu and net, but block and the
# per-vCPU KVM counters missing (measured on the test bed): missing keys, not an error, are the sign.
_PROBE_KEY: Dict[str, str] = {
    "state": "state.state",
    "cpu-total": "cpu.time",
    "balloon": "balloon.current",
    "vcpu": "vcpu.current",
    "interface": "net.count",
    "block": "block.count",
    # iothread: none; a domain without iothreads has no iothread.* keys at all.
}

_INACTIVE = (libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_NOSTATE)
_INACTIVE_OR_UNKNOWN = _INACTIVE + (None,)

NOWAIT = libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_NOWAIT
BACKING = libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_BACKING


class DomainEntry(NamedTuple):
    """One domain in the answer of a bulk stats call."""

    domain: libvirt.virDomain
    uuid: str
    name: str
    stats: Dict[str, Any]


def stats_mask(groups: Iterable[str]) -> int:
    mask = 0
    for group in groups:
        mask |= GROUP_FLAGS[group]
    return mask


def call_flags(backing: bool) -> int:
    # NOWAIT always: a domain whose job another call holds is skipped, not waited for.
    return NOWAIT | (BACKING if backing else 0)


def _compact(stats: Dict[str, Any]) -> Dict[str, Any]:
    """The same dict with interned keys: libvirt-python makes fresh key strings for every domain on
    every call, which at a thousand domains is ~8 MiB per sample kept (and two samples are kept).

    A shut-off domain keeps its state group only: libvirt 9 also reports a cpu.time that is not the
    guest's, balloon and vcpu sizes from the config, and block sizes of its images, none of which
    describe a running guest.
    """
    if stats.get("state.state") in _INACTIVE:
        return {intern(k): v for k, v in stats.items() if k.startswith("state.")}
    return {intern(k): v for k, v in stats.items()}


def get_all_domain_stats(conn: libvirt.virConnect, groups: Sequence[str], backing: bool,
                         active_only: bool = False) -> List[DomainEntry]:
    """One getAllDomainStats call over every domain, active and inactive (inactive ones are cut to
    their state group), or over the active ones only."""
    flags = call_flags(backing) | (libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_ACTIVE if active_only else 0)
    return _compact_all(conn.getAllDomainStats(stats_mask(groups), flags))


def domain_list_stats(conn: libvirt.virConnect, domains: Sequence[libvirt.virDomain],
                      groups: Sequence[str], backing: bool) -> List[DomainEntry]:
    """The same for a share of the domains (domainListGetStats)."""
    if not domains:
        return []
    return _compact_all(conn.domainListGetStats(list(domains), stats_mask(groups), call_flags(backing)))


def lookup_existing(conn: libvirt.virConnect, uuids: Iterable[str]) -> List[libvirt.virDomain]:
    """The domains of ``uuids`` that still exist (one undefined since it was named is left out)."""
    out = []
    for uuid in uuids:
        try:
            out.append(conn.lookupByUUIDString(uuid))
        except libvirt.libvirtError as e:
            if e.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                raise
    return out


def _compact_all(result: List[Tuple[libvirt.virDomain, Dict[str, Any]]]) -> List[DomainEntry]:
    """Compact libvirt-python's answer entry by entry, letting go of each raw dict at once: the raw
    answer and its compacted copy never both exist whole (at a thousand domains, the peak memory)."""
    out: List[DomainEntry] = []
    result.reverse()
    while result:
        dom, stats = result.pop()
        out.append(DomainEntry(dom, dom.UUIDString(), dom.name(), _compact(stats)))
    return out


def domain_id(dom: Any) -> Optional[int]:
    """The libvirt domain ID, kept in the virDomain object (no call); None when unknown."""
    try:
        return int(dom.ID()) if dom is not None else None
    except (AttributeError, TypeError, ValueError, libvirt.libvirtError):
        return None


def incomplete_groups(stats: Dict[str, Any], groups: Iterable[str]) -> List[str]:
    """Groups asked for that a *running* domain's entry lacks. Inactive domains have only state.

    Called for every domain of every sample: one dict lookup per group in the common case.
    """
    if stats.get("state.state") in _INACTIVE_OR_UNKNOWN:
        return []
    missing = [group for group in groups if group in _PROBE_KEY and _PROBE_KEY[group] not in stats]
    if "block.count" in stats and "block" not in missing and _block_counters_missing(stats):
        missing.append("block")
    return missing


def _block_counters_missing(stats: Dict[str, Any]) -> bool:
    """True when no disk with a medium has counters: the QEMU monitor did not answer (name and path
    are filled in by libvirt itself and remain). An empty CD-ROM alone has no counters either."""
    if "block.0.rd.reqs" in stats or "block.0.allocation" in stats:
        return False  # the common case, decided by the first disk
    count = int(stats.get("block.count", 0))
    with_medium = [i for i in range(count) if stats.get("block.%d.path" % i)]
    if not with_medium:
        return False
    return not any("block.%d.rd.reqs" % i in stats or "block.%d.allocation" % i in stats
                   for i in with_medium)
