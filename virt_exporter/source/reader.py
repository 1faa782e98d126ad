"""Reading one Sample: host CPU and network devices, the stuck-aware bulk stats calls, host memory
beside them, the domain XML the cache lacks and the QEMU pids. The sampler decides when to read;
this module does the reading, and is the one place a Sample is assembled."""

from __future__ import annotations

import logging
import re
import time
from concurrent.futures import Future
from typing import Callable, Dict, FrozenSet, Iterable, List, Optional, Sequence, Tuple, TypeVar

import libvirt

from ..sample import DOMAIN_FLAGS, STORAGE_POOLS, DomainStats, HostFacts, HostMemory, NodeInfo, Sample, StoragePool
from . import bulk, host
from .connection import CallTimeout, Connection, LibvirtUnavailable
from .domxml import DomainXMLCache, xml_or_none
from .listings import ListingReader, Listings
from .stuck import StuckAwareStats
from .topology import cells_from_capabilities

log = logging.getLogger(__name__)

# How long after the stats calls a host call (memory) running beside them is still waited for.
HOST_CALL_GRACE_S = 0.1
# Less than this left of the sample's deadline, the listings are not sent: they take a few ms (bench/
# bench_listings.py), and a call sure to be abandoned would take its lane out of use.
LISTING_MIN_BUDGET_S = 0.05

MemoryReading = Tuple[HostMemory, Dict[int, HostMemory]]
T = TypeVar("T")


class SampleReader:
    """Reads samples for the sampler. ``groups``: the bulk stats groups to ask for; ``listings``:
    what to list with every sample (sample.DOMAIN_FLAGS, sample.STORAGE_POOLS); ``closing()``: the
    UUIDs of the domains libvirtd is tearing down after a migration (source/jobs.py), which the
    stats calls and listings must not wait for."""

    def __init__(self, connection: Connection, xml_cache: DomainXMLCache, groups: Sequence[str],
                 backing: bool = True, concurrency: int = 1, read_qemu_pids: bool = False,
                 host_root: str = "/", clock: Callable[[], float] = time.monotonic,
                 listings: Sequence[str] = (), closing: Callable[[], FrozenSet[str]] = frozenset) -> None:
        self.connection = connection
        self.xml_cache = xml_cache
        self.groups = list(groups)
        self.read_qemu_pids = read_qemu_pids
        self.host_root = host_root
        self._clock = clock
        self.stats = StuckAwareStats(connection, groups, backing, concurrency, clock)
        self.stats.closing = closing
        self.listings: Optional[ListingReader] = ListingReader(listings) if listings else None
        self._node: Optional[NodeInfo] = None
        self._host: Optional[HostFacts] = None
        self._last_memory: Optional[MemoryReading] = None
        self._last_failure = ""
        self._last_listings_error = ""
        connection.on_connect(self._on_connect)

    def _on_connect(self, conn: libvirt.virConnect) -> None:
        self._node, self._host = read_host_facts(conn, self.host_root)
        self.xml_cache.invalidate_all()

    def forget(self, uuid: str) -> None:
        """A domain that was destroyed or undefined."""
        self.stats.forget(uuid)

    def stop(self) -> None:
        self.stats.stop()

    def read(self, started: float, wall_time_s: float, deadline: float) -> Sample:
        """One sample, timestamped ``started`` / ``wall_time_s`` (taken before any read)."""
        host_cpu = host.read_proc_stat(self.host_root)
        base = Sample(wall_time_s=wall_time_s, monotonic_s=started, up=False, node=self._node,
                      host_cpu=host_cpu, host=self._host, net_dev=host.read_net_dev(),
                      host_memory_available_bytes=host.read_mem_available_bytes())
        cells = list(self._host.cell_cpus) if self._host is not None else []
        memory_future: Optional[Future] = None
        try:
            # Host memory runs beside the stats calls, on the lane for calls libvirtd answers itself:
            # a late answer is not waited for, the last one stands.
            memory_future = self.connection.submit(_memory_stats(cells), cheap=True)
            result = self.stats.collect(deadline)
        except (LibvirtUnavailable, CallTimeout, libvirt.libvirtError) as e:
            if memory_future is not None and not memory_future.done():
                self.connection.abandon(memory_future)
            return self._failed(base, e)
        stats_done = self._clock()
        if self._last_failure:
            log.info("libvirt sample succeeded again")
            self._last_failure = ""
        host_memory, cell_memory = self._host_memory(memory_future, deadline)
        memory_done = self._clock()
        domains: Dict[str, DomainStats] = {}
        domain_ids: Dict[str, int] = {}
        unresponsive = set(result.unresponsive)
        for dom, uuid, name, stats in result.raw:
            complete = uuid not in unresponsive and not bulk.incomplete_groups(stats, self.groups)
            if not complete:
                unresponsive.add(uuid)
            domains[uuid] = DomainStats(uuid=uuid, name=name, stats=stats, complete=complete)
            domain_id = bulk.domain_id(dom)
            if domain_id is not None:
                domain_ids[uuid] = domain_id
        fetched = self._refresh_xml(list(domains), deadline)
        pids = self._qemu_pids(domains.values()) if self.read_qemu_pids else {}
        listings, listings_error = self._listings(deadline)
        end = self._clock()
        if log.isEnabledFor(logging.DEBUG):
            log.debug("sample took %.3fs: stats %.3fs (%s), host memory +%.3fs, domain XML +%.3fs (%d fetched); "
                      "%d domains, %d unresponsive",
                      end - started, stats_done - started,
                      ", ".join("%s %d" % kv for kv in result.counts.items()),
                      memory_done - stats_done, end - memory_done, fetched, len(domains), len(unresponsive))
        return Sample(wall_time_s=wall_time_s, monotonic_s=started, up=True, domains=domains, node=self._node,
                      host_cpu=host_cpu, host_memory=host_memory, bulk_duration_s=result.duration_s,
                      unresponsive=frozenset(unresponsive), host=self._host, net_dev=base.net_dev,
                      cell_memory=cell_memory, domain_ids=domain_ids,
                      qemu_pids=pids, host_memory_available_bytes=base.host_memory_available_bytes,
                      autostart=listings.autostart, persistent=listings.persistent,
                      storage_pools=listings.storage_pools, listings_error=listings_error)

    def _failed(self, base: Sample, error: BaseException) -> Sample:
        why = one_line(error)
        # Once per kind of failure, not at every scrape while libvirtd is down.
        kind = re.sub(r"[0-9.]+", "#", why)
        level = logging.DEBUG if kind == self._last_failure else logging.WARNING
        self._last_failure = kind
        log.log(level, "libvirt sample failed after %.3fs: %s", self._clock() - base.monotonic_s, why)
        return Sample(wall_time_s=base.wall_time_s, monotonic_s=base.monotonic_s, up=False, node=base.node,
                      host_cpu=base.host_cpu, error=why, host=base.host, net_dev=base.net_dev,
                      host_memory_available_bytes=base.host_memory_available_bytes)

    def _host_memory(self, future: "Future[MemoryReading]",
                     deadline: float) -> Tuple[Optional[HostMemory], Dict[int, HostMemory]]:
        """This sample's host memory if it came in time, else the last one."""
        grace_end = min(deadline, self._clock() + HOST_CALL_GRACE_S)
        try:
            self._last_memory = self.connection.wait(future, grace_end - self._clock())
        except CallTimeout:  # abandoned: the answer, if it comes, is kept for the next sample
            future.add_done_callback(self._late_memory)
        except (libvirt.libvirtError, LibvirtUnavailable) as e:
            log.warning("host memory stats failed: %s", one_line(e))
        if self._last_memory is None:
            return None, {}
        return self._last_memory

    def _late_memory(self, future: "Future[MemoryReading]") -> None:
        try:
            if not future.cancelled() and future.exception() is None:
                self._last_memory = future.result()
        except Exception as e:  # a done-callback must never raise
            log.debug("late host memory answer: %s", e)

    def _refresh_xml(self, uuids: List[str], deadline: float) -> int:
        """Fetch the XML of domains the cache lacks (new, or changed per an event); returns how many.

        The domains are listed on the lane the call runs on (a virDomain from the stats calls would
        route the call over a stats lane, maybe one held up by a stuck QEMU). XMLDesc is answered by
        libvirtd from its own copy of the definition.
        """
        self.xml_cache.forget_except(uuids)
        missing = set(self.xml_cache.missing(uuids))
        if not missing:
            return 0

        by_uuid = bool(self.stats.closing())

        def fetch(conn: libvirt.virConnect) -> List[Tuple[str, str]]:
            out = []
            for dom in _domains_of(conn, missing, by_uuid):
                uuid = dom.UUIDString()
                if uuid not in missing:
                    continue
                try:
                    xml = xml_or_none(dom)
                except libvirt.libvirtError as e:
                    log.warning("cannot read XML of domain %s: %s", dom.name(), e.get_error_message())
                    continue
                if xml is not None:
                    out.append((uuid, xml))
            return out

        try:
            fetched = self.connection.call(fetch, max(0.0, deadline - self._clock()), cheap=True)
        except (LibvirtUnavailable, CallTimeout, libvirt.libvirtError) as e:
            # Identity series wait for the next scrape; the stats of this one stand.
            log.warning("domain XML refresh incomplete: %s", one_line(e))
            return 0
        for uuid, xml in fetched:
            self.xml_cache.store(uuid, xml)
        return len(fetched)

    def _listings(self, deadline: float) -> Tuple[Listings, str]:
        """The per-sample listings (autostart, persistent, storage pools) the collectors asked for;
        those that failed are None, with why: the stats of this sample stand.

        The domain listings and the pools are separate calls sent side by side and waited for
        against the sample's one deadline, so that one failing or late leaves the other standing,
        and a libvirtError leaves the call: the connection probes its lane from it and notices a
        lost libvirtd. With less than LISTING_MIN_BUDGET_S left, nothing is sent."""
        if self.listings is None:
            return Listings(), ""
        reader = self.listings
        errors: List[str] = []
        flags_future: Optional[Future] = None
        pools_future: Optional[Future] = None
        flags: Optional[Tuple[FrozenSet[str], FrozenSet[str]]] = None
        pools: Optional[Tuple[StoragePool, ...]] = None
        in_time = deadline - self._clock() >= LISTING_MIN_BUDGET_S
        if reader.wants(DOMAIN_FLAGS):
            if self.stats.closing():
                # Listing domains would wait for libvirtd's teardown of the closing domain
                # (source/jobs.py): the last listing stands, without a call.
                flags = reader.last_domain_flags
            elif in_time:
                flags_future = self._submit_listing(reader.domain_flags, "domain listings", errors)
            else:
                errors.append("domain listings: not read, the sample's deadline was too near")
        if reader.wants(STORAGE_POOLS):
            if in_time:
                pools_future = self._submit_listing(reader.storage_pools, "storage pools", errors)
            else:
                errors.append("storage pools: not read, the sample's deadline was too near")
        if flags_future is not None:
            flags = self._listing_answer(flags_future, "domain listings", deadline, errors)
        if pools_future is not None:
            pools = self._listing_answer(pools_future, "storage pools", deadline, errors)
        errors.sort()  # domain listings before storage pools, however they failed
        listings = Listings(autostart=flags[0] if flags else None, persistent=flags[1] if flags else None,
                            storage_pools=pools, error="; ".join(errors))
        kind = re.sub(r"[0-9.]+", "#", listings.error)
        if kind and kind != self._last_listings_error:
            log.warning("%s", listings.error)  # once per kind of failure, not at every sample
        self._last_listings_error = kind
        return listings, listings.error

    def _submit_listing(self, fn: Callable[[libvirt.virConnect], T], what: str,
                        errors: List[str]) -> "Optional[Future[T]]":
        try:
            return self.connection.submit(fn, cheap=True)
        except LibvirtUnavailable as e:
            errors.append("%s: %s" % (what, one_line(e)))
            return None

    def _listing_answer(self, future: "Future[T]", what: str, deadline: float, errors: List[str]) -> Optional[T]:
        try:
            return self.connection.wait(future, deadline - self._clock())
        except Exception as e:  # noqa: BLE001 - listings are extras: the sample's stats stand
            errors.append("%s: %s" % (what, one_line(e)))
        return None

    def _qemu_pids(self, domains: Iterable[DomainStats]) -> Dict[str, int]:
        """QEMU pid per running domain, from libvirt's pid files (no libvirt call needed)."""
        pids: Dict[str, int] = {}
        for dom in domains:
            if dom.active:
                pid = host.read_qemu_pid(dom.name, self.host_root)
                if pid is not None:
                    pids[dom.uuid] = pid
        return pids


def _domains_of(conn: libvirt.virConnect, uuids: Iterable[str], by_uuid: bool) -> List[libvirt.virDomain]:
    """The domains to read the XML of: listed, or, while a domain is closing (listing would wait
    for its teardown, source/jobs.py), looked up one by one."""
    if not by_uuid:
        return conn.listAllDomains(0)
    return bulk.lookup_existing(conn, uuids)


def read_host_facts(conn: libvirt.virConnect, host_root: str = "/") -> Tuple[NodeInfo, HostFacts]:
    """What changes only with the host: node info, NUMA topology, versions, CPU model."""
    model, _memory_mib, cpus, mhz = conn.getInfo()[:4]  # virNodeGetInfo's "model" is the arch
    node = NodeInfo(cpus=int(cpus), core_mhz=int(mhz), model=str(model))
    capabilities = conn.getCapabilities()
    facts = HostFacts(hostname=conn.getHostname(), libvirt_version=_version(conn.getLibVersion()),
                      hypervisor_version=_version(conn.getVersion()),
                      cpu_model=host.host_cpu_model(capabilities, str(model), host_root),
                      cell_cpus=cells_from_capabilities(capabilities))
    return node, facts


def _memory_stats(cells: List[int]) -> Callable[[libvirt.virConnect], MemoryReading]:
    def call(conn: libvirt.virConnect) -> MemoryReading:
        def read(cell: int) -> HostMemory:
            m = conn.getMemoryStats(cell, 0)
            return HostMemory(total_kib=int(m.get("total", 0)), free_kib=int(m.get("free", 0)))

        return read(libvirt.VIR_NODE_MEMORY_STATS_ALL_CELLS), {cell: read(cell) for cell in cells}

    return call


def _version(v: int) -> str:
    return "%d.%d.%d" % (v // 1000000, (v // 1000) % 1000, v % 1000)


def one_line(e: BaseException) -> str:
    if isinstance(e, libvirt.libvirtError):
        msg = e.get_error_message() or str(e)
    else:
        msg = str(e) or type(e).__name__
    return " ".join(msg.split())
