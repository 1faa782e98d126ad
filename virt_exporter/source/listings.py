"""Listings libvirtd answers from its own state, made once per sample (never per domain): which
domains are persistent and which start with the host, and the storage pools with their sizes.

Each is a few list calls on the lane for cheap calls: two domain list calls with libvirt's filter
flags, one pool list call and one info call per pool (a pool's type, from its XML, is read once per
pool UUID: it cannot change). The domain listings and the pools are two calls (source/reader.py), so
they fail apart: a libvirt error in one leaves the other standing. A libvirtd without a storage driver
(Debian 13's QEMU-only install) has no pools: that is an empty list, not an error.
"""

from __future__ import annotations

import dataclasses
import itertools
import threading
from typing import Dict, FrozenSet, Optional, Sequence, Tuple

import libvirt
from lxml import etree

from ..sample import DOMAIN_FLAGS, STORAGE_POOLS, StoragePool

KINDS = (DOMAIN_FLAGS, STORAGE_POOLS)

_PARSER = etree.XMLParser(resolve_entities=False, no_network=True)


@dataclasses.dataclass(frozen=True)
class Listings:
    # UUIDs. None when not asked for, when the listing failed or did not answer in time (``error``
    # says why), or while a domain closes and the last listing failed or none was read
    # (ListingReader.last_domain_flags).
    autostart: Optional[FrozenSet[str]] = None
    persistent: Optional[FrozenSet[str]] = None
    storage_pools: Optional[Tuple[StoragePool, ...]] = None
    error: str = ""    # why the listings that failed did, one line; "" when none failed


def _uuids(conn: libvirt.virConnect, flag: int) -> FrozenSet[str]:
    return frozenset(dom.UUIDString() for dom in conn.listAllDomains(flag))


def pool_type(xml: str) -> str:
    """The ``type`` attribute of a pool's XML (dir, logical, netfs …)."""
    return etree.fromstring(xml.encode("utf-8"), _PARSER).get("type", "")


class ListingReader:
    """Reads the listings asked for; remembers pool types by pool UUID."""

    def __init__(self, kinds: Sequence[str]) -> None:
        unknown = set(kinds) - set(KINDS)
        if unknown:
            raise ValueError("unknown listings: %s" % ", ".join(sorted(unknown)))
        self.kinds = tuple(kinds)
        self._pool_types: Dict[str, str] = {}
        self._domain_flags: Optional[Tuple[FrozenSet[str], FrozenSet[str]]] = None
        # Calls are numbered as they start: a late call (abandoned, still running on its lane) that
        # ends after a newer one must not put back older flags, nor clear newer ones.
        self._flags_calls = itertools.count(1)
        self._flags_from = 0
        self._flags_lock = threading.Lock()

    def wants(self, kind: str) -> bool:
        return kind in self.kinds

    @property
    def last_domain_flags(self) -> Optional[Tuple[FrozenSet[str], FrozenSet[str]]]:
        """The domain flags of the last listing, None if it failed or none was read: what stands
        while libvirtd tears a domain down after a migration (listing domains would wait for it,
        source/jobs.py)."""
        return self._domain_flags

    def domain_flags(self, conn: libvirt.virConnect) -> Tuple[FrozenSet[str], FrozenSet[str]]:
        """(autostart, persistent) domain UUIDs: two list calls with libvirt's filter flags.

        A libvirtError is raised, not kept: the caller's connection judges from it whether the
        connection is lost. The last listing is replaced only when this one is complete; a failure
        clears it. A call the caller gave up waiting for still lands here when it returns, unless a
        call started after it has landed first."""
        call = next(self._flags_calls)
        try:
            flags = (_uuids(conn, libvirt.VIR_CONNECT_LIST_DOMAINS_AUTOSTART),
                     _uuids(conn, libvirt.VIR_CONNECT_LIST_DOMAINS_PERSISTENT))
        except libvirt.libvirtError:
            self._land(call, None)
            raise
        self._land(call, flags)
        return flags

    def _land(self, call: int, flags: Optional[Tuple[FrozenSet[str], FrozenSet[str]]]) -> None:
        with self._flags_lock:
            if call > self._flags_from:
                self._flags_from, self._domain_flags = call, flags

    def storage_pools(self, conn: libvirt.virConnect) -> Tuple[StoragePool, ...]:
        """The storage pools, sorted by name; a libvirtd without a storage driver has none. Other
        libvirt errors are raised (see domain_flags)."""
        out = []
        seen = set()
        try:
            listed = conn.listAllStoragePools(0)
        except libvirt.libvirtError as e:
            if e.get_error_code() != libvirt.VIR_ERR_NO_SUPPORT:
                raise
            listed = []  # no storage driver in this libvirtd: no pools
        for pool in listed:
            try:
                uuid = pool.UUIDString()
                state, capacity, allocation, available = pool.info()[:4]
                kind = self._pool_types.get(uuid)
                if kind is None:
                    kind = self._pool_types[uuid] = pool_type(pool.XMLDesc(0))
                out.append(StoragePool(name=pool.name(), uuid=uuid, type=kind, state=int(state),
                                       capacity_bytes=int(capacity), allocation_bytes=int(allocation),
                                       available_bytes=int(available)))
                seen.add(uuid)
            except libvirt.libvirtError as e:
                # Undefined between the list and the info call: gone, as if listed a moment later.
                if e.get_error_code() != libvirt.VIR_ERR_NO_STORAGE_POOL:
                    raise
        for uuid in [u for u in self._pool_types if u not in seen]:
            del self._pool_types[uuid]
        return tuple(sorted(out, key=lambda p: p.name))
