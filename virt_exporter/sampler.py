"""The single-flight sampler: the one place that decides when libvirt and /proc are read.

Like vdsm's sampler it owns time and trouble: it takes the timestamp before the calls, makes the bulk
call under a deadline, and hands out (previous, current) samples. Concurrent scrapers (and the perfmon
engine) share one in-flight sample; a request within ``min_interval_s`` of the last sample reuses it,
so two Prometheus servers scraping one exporter never get a rate over a few milliseconds.

``previous`` is the last good sample, kept across a failed one (libvirtd restarting) so rates go on
after a short outage, but only for what the counters prove comparable (``comparable_previous``).
"""

from __future__ import annotations

import dataclasses
import logging
import re
import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FuturesTimeout
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import libvirt

from .sample import DomainStats, HostMemory, NodeInfo, Sample
from .source import bulk, host
from .source.connection import CallTimeout, Connection, LibvirtUnavailable
from .source.domxml import DomainXMLCache
from .source.stuck import StuckAwareStats
from .source.topology import cells_from_capabilities

log = logging.getLogger(__name__)

SamplePair = Tuple[Optional[Sample], Sample]

# How long after the stats calls a host call (memory) running beside them is still waited for.
HOST_CALL_GRACE_S = 0.1
# A previous sample older than this is not used for rates: after a long outage the first sample is a
# new baseline, as the very first one is.
PREVIOUS_MAX_GAP_S = 600.0


@dataclasses.dataclass
class SamplerOptions:
    groups: Sequence[str]
    backing: bool = True
    min_interval_s: float = 1.0
    timeout_s: float = 5.0
    host_root: str = "/"
    concurrency: int = 1
    read_qemu_pids: bool = False
    run_dir: str = "/run/libvirt/qemu"


class Sampler:
    def __init__(self, connection: Connection, xml_cache: DomainXMLCache, options: SamplerOptions,
                 clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time) -> None:
        self.connection = connection
        self.xml_cache = xml_cache
        self.options = options
        self._clock = clock
        self._wall_clock = wall_clock
        self._cond = threading.Condition()
        self._in_flight = False
        self._generation = 0
        self._current: Optional[Sample] = None
        self._previous: Optional[Sample] = None   # last good sample before _current
        self._last_good: Optional[Sample] = None
        self._node: Optional[NodeInfo] = None
        self._cell_cpus: Dict[int, List[int]] = {}
        self._host_info: Dict[str, str] = {}
        self.samples_total = 0
        self._last_memory: Optional[Tuple[HostMemory, Dict[int, HostMemory], float]] = None
        # uuid → (monotonic time, event) of the last stop / undefine event, for samples in flight.
        self._gone: Dict[str, Tuple[float, int]] = {}
        self._last_failure = ""
        self.stats = StuckAwareStats(connection, options.groups, options.backing, options.concurrency, clock)
        connection.on_connect(self._on_connect)
        xml_cache.register_events(connection.on_event)
        xml_cache.subscribe(self._on_lifecycle)

    # --- what the connection tells us -------------------------------------------------------------

    def _on_connect(self, conn: libvirt.virConnect) -> None:
        """Read what changes only with the host: node info, NUMA topology, versions."""
        model, _memory_mib, cpus, mhz, nodes = conn.getInfo()[:5]
        self._node = NodeInfo(cpus=int(cpus), core_mhz=int(mhz), model=str(model), numa_cells=int(nodes))
        self._cell_cpus = cells_from_capabilities(conn.getCapabilities())
        lib = conn.getLibVersion()
        hv = conn.getVersion()
        self._host_info = {
            "hostname": conn.getHostname(),
            "libvirt_version": _version(lib),
            "hypervisor_version": _version(hv),
            "cpu_model": str(model),
        }
        self.xml_cache.invalidate_all()

    def _on_lifecycle(self, uuid: str, event: int, detail: int) -> None:
        # A destroyed or undefined domain leaves a reused sample at once (issue: no series of a
        # domain that is gone may be served from the cache).
        if event not in (libvirt.VIR_DOMAIN_EVENT_STOPPED, libvirt.VIR_DOMAIN_EVENT_UNDEFINED):
            return
        self.stats.forget(uuid)
        with self._cond:
            now = self._clock()
            # A sample in flight may have read the domain before this event: _publish drops it.
            self._gone = {u: g for u, g in self._gone.items() if now - g[0] < 60.0}
            self._gone[uuid] = (now, event)
            cur = self._current
            if cur is not None and uuid in cur.domains:
                domains = {u: d for u, d in cur.domains.items() if u != uuid}
                self._current = dataclasses.replace(cur, domains=domains)

    @property
    def host_info(self) -> Mapping[str, str]:
        return self._host_info

    @property
    def cell_cpus(self) -> Mapping[int, List[int]]:
        return self._cell_cpus

    # --- single flight ----------------------------------------------------------------------------

    def get(self, timeout_s: Optional[float] = None) -> SamplePair:
        """(previous good sample, current sample), taking a new one unless one is in flight (then
        wait for it) or the last one is younger than min_interval_s (then reuse it)."""
        timeout_s = self.options.timeout_s if timeout_s is None else min(timeout_s, self.options.timeout_s)
        with self._cond:
            cur = self._current
            if cur is not None and self._clock() - cur.monotonic_s < self.options.min_interval_s:
                return self._previous, cur
            if self._in_flight:
                generation = self._generation
                # Our own deadline, not the sample's: a scrape with Prometheus's shorter timeout gets
                # the last sample rather than no answer.
                deadline = self._clock() + timeout_s
                while self._in_flight and self._generation == generation:
                    remaining = deadline - self._clock()
                    if remaining <= 0:
                        break
                    self._cond.wait(remaining)
                if self._current is not None:
                    return self._previous, self._current
            self._in_flight = True
            # The oldest sample is needed by nobody once a new one is being taken (scrapes arriving
            # now wait for the new one): let it go before the new dicts arrive, a third of the peak
            # memory at a thousand domains.
            self._previous = None
        sample: Optional[Sample] = None
        try:
            sample = self._take(timeout_s)
        finally:
            with self._cond:
                self._in_flight = False
                if sample is not None:
                    self._publish(sample)
                    pair = (self._previous, self._current)
                self._generation += 1
                self._cond.notify_all()
        return pair  # type: ignore[return-value]

    def _publish(self, sample: Sample) -> None:
        self.samples_total += 1
        sample = self._without_gone(sample)
        self._current = sample
        if sample.up:
            self._previous = comparable_previous(self._last_good, sample)
            self._last_good = sample
        else:
            self._previous = None

    def _without_gone(self, sample: Sample) -> Sample:
        """Drop domains a stop or undefine event announced after this sample started: their stats
        may predate it. A stopped domain the sample already saw shut off stays."""
        drop = [uuid for uuid, (at, event) in self._gone.items()
                if at >= sample.monotonic_s and uuid in sample.domains
                and (event == libvirt.VIR_DOMAIN_EVENT_UNDEFINED or sample.domains[uuid].active)]
        if not drop:
            return sample
        domains = {u: d for u, d in sample.domains.items() if u not in drop}
        return dataclasses.replace(sample, domains=domains,
                                   unresponsive=frozenset(u for u in sample.unresponsive if u not in drop))

    # --- one sample -------------------------------------------------------------------------------

    def _take(self, timeout_s: float) -> Sample:
        opts = self.options
        started = self._clock()
        deadline = started + timeout_s
        # Timestamps before any read: the counters moved during [previous start, this start].
        wall = self._wall_clock()
        host_cpu = host.read_proc_stat(opts.host_root)
        extras: Dict[str, Any] = {"net_dev": host.read_net_dev(),
                                  "numa_cell_cpus": self._cell_cpus,
                                  "host_info": self._host_info}
        memory_future: Optional[Future] = None
        try:
            # Host memory runs beside the stats calls, on the lane for calls libvirtd answers itself:
            # a late answer is not waited for, the last one stands, marked by its age.
            memory_future = self.connection.submit(_memory_stats(list(self._cell_cpus)), cheap=True)
            result = self.stats.collect(deadline)
        except (LibvirtUnavailable, CallTimeout, libvirt.libvirtError) as e:
            if memory_future is not None and not memory_future.done():
                self.connection.abandon(memory_future)
            why = _one_line(e)
            # Once per kind of failure, not at every scrape while libvirtd is down.
            kind = re.sub(r"[0-9.]+", "#", why)
            level = logging.DEBUG if kind == self._last_failure else logging.WARNING
            self._last_failure = kind
            log.log(level, "libvirt sample failed after %.3fs: %s", self._clock() - started, why)
            return Sample(wall_time_s=wall, monotonic_s=started, up=False, node=self._node,
                          host_cpu=host_cpu, error=why, extras=extras)
        stats_done = self._clock()
        if self._last_failure:
            log.info("libvirt sample succeeded again")
            self._last_failure = ""
        raw = result.raw
        host_memory, cells, memory_age_s = self._host_memory(memory_future, deadline)
        memory_done = self._clock()
        extras["numa_cells"] = cells
        extras["host_memory_age_s"] = memory_age_s
        domains: Dict[str, DomainStats] = {}
        domain_ids: Dict[str, int] = {}
        unresponsive = set(result.unresponsive)
        for dom, uuid, name, stats in raw:
            complete = uuid not in unresponsive and not bulk.incomplete_groups(stats, opts.groups)
            if not complete:
                unresponsive.add(uuid)
            domains[uuid] = DomainStats(uuid=uuid, name=name, stats=stats, complete=complete)
            domain_id = _domain_id(dom)
            if domain_id is not None:
                domain_ids[uuid] = domain_id
        # libvirt gives a running domain a new ID at every start: the restart test for rates.
        extras["domain_ids"] = domain_ids
        fetched = self._refresh_xml(list(domains), deadline)
        if opts.read_qemu_pids:
            extras["qemu_pids"] = _qemu_pids(opts.run_dir, domains.values())
        end = self._clock()
        if log.isEnabledFor(logging.DEBUG):
            log.debug("sample took %.3fs: stats %.3fs (%s), host memory +%.3fs, domain XML +%.3fs (%d fetched); "
                      "%d domains, %d unresponsive",
                      end - started, stats_done - started,
                      ", ".join("%s %d" % kv for kv in result.counts.items()),
                      memory_done - stats_done, end - memory_done, fetched, len(domains), len(unresponsive))
        return Sample(wall_time_s=wall, monotonic_s=started, up=True, domains=domains, node=self._node,
                      host_cpu=host_cpu, host_memory=host_memory, bulk_duration_s=result.duration_s,
                      unresponsive=frozenset(unresponsive), extras=extras)

    def _host_memory(self, future: "Future[Any]",
                     deadline: float) -> Tuple[Optional[HostMemory], Dict[int, HostMemory], float]:
        """This sample's host memory if it came in time, else the last one and its age."""
        grace_end = min(deadline, self._clock() + HOST_CALL_GRACE_S)
        try:
            host_memory, cells = future.result(timeout=max(0.0, grace_end - self._clock()))
            self._last_memory = (host_memory, cells, self._clock())
        except FuturesTimeout:
            self.connection.abandon(future)

            def late(f: "Future[Any]") -> None:
                try:
                    if not f.cancelled() and f.exception() is None:
                        self._last_memory = f.result() + (self._clock(),)
                except Exception as e:  # a done-callback must never raise
                    log.debug("late host memory answer: %s", e)

            future.add_done_callback(late)
        except (libvirt.libvirtError, LibvirtUnavailable) as e:
            log.warning("host memory stats failed: %s", _one_line(e))
        if self._last_memory is None:
            return None, {}, 0.0
        host_memory, cells, taken = self._last_memory
        return host_memory, cells, max(0.0, self._clock() - taken)

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

        def fetch(conn: libvirt.virConnect) -> List[Tuple[str, str]]:
            out = []
            for dom in conn.listAllDomains(0):
                uuid = dom.UUIDString()
                if uuid not in missing:
                    continue
                try:
                    out.append((uuid, dom.XMLDesc(0)))
                except libvirt.libvirtError as e:
                    if e.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                        log.warning("cannot read XML of domain %s: %s", dom.name(), e.get_error_message())
            return out

        try:
            fetched = self.connection.call(fetch, max(0.0, deadline - self._clock()), cheap=True)
        except (LibvirtUnavailable, CallTimeout, libvirt.libvirtError) as e:
            # Identity series wait for the next scrape; the stats of this one stand.
            log.warning("domain XML refresh incomplete: %s", _one_line(e))
            return 0
        for uuid, xml in fetched:
            self.xml_cache.store(uuid, xml)
        return len(fetched)


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
    prev_ids = previous.extras.get("domain_ids") or {}
    cur_ids = current.extras.get("domain_ids") or {}
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


def _domain_id(dom: Any) -> Optional[int]:
    """The libvirt domain ID, kept in the virDomain object (no call); None when unknown."""
    try:
        return int(dom.ID()) if dom is not None else None
    except (AttributeError, TypeError, ValueError, libvirt.libvirtError):
        return None


def _memory_stats(cells: List[int]) -> Callable[[libvirt.virConnect], Tuple[HostMemory, Dict[int, HostMemory]]]:
    def call(conn: libvirt.virConnect) -> Tuple[HostMemory, Dict[int, HostMemory]]:
        def read(cell: int) -> HostMemory:
            m = conn.getMemoryStats(cell, 0)
            return HostMemory(total_kib=int(m.get("total", 0)), free_kib=int(m.get("free", 0)))

        return read(libvirt.VIR_NODE_MEMORY_STATS_ALL_CELLS), {cell: read(cell) for cell in cells}

    return call


def _qemu_pids(run_dir: str, domains: Any) -> Dict[str, int]:
    """QEMU pid per running domain, from libvirt's pid files (no libvirt call needed)."""
    pids: Dict[str, int] = {}
    for dom in domains:
        if not dom.active:
            continue
        try:
            with open("%s/%s.pid" % (run_dir, dom.name)) as f:
                pids[dom.uuid] = int(f.read().strip())
        except (OSError, ValueError):
            continue
    return pids


def _version(v: int) -> str:
    return "%d.%d.%d" % (v // 1000000, (v // 1000) % 1000, v % 1000)


def _one_line(e: BaseException) -> str:
    if isinstance(e, libvirt.libvirtError):
        msg = e.get_error_message() or str(e)
    else:
        msg = str(e) or type(e).__name__
    return " ".join(msg.split())
