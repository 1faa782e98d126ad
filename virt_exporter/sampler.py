"""The single-flight sampler: the one place that decides when libvirt and /proc are read.

Like vdsm's sampler it owns time and trouble: it takes the timestamp before the calls, makes the bulk
call under a deadline, and hands out (previous, current) samples. Concurrent scrapers (and the perfmon
engine) share one in-flight sample; a request within ``min_interval_s`` of the last sample reuses it,
so two Prometheus servers scraping one exporter never get a rate over a few milliseconds.
"""

from __future__ import annotations

import dataclasses
import logging
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
                deadline = self._clock() + timeout_s + 1.0
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
                self._generation += 1
                self._cond.notify_all()
        return self._previous, sample

    def _publish(self, sample: Sample) -> None:
        self.samples_total += 1
        self._current = sample
        if sample.up:
            self._previous = self._last_good
            self._last_good = sample
        else:
            self._previous = None

    # --- one sample -------------------------------------------------------------------------------

    def _take(self, timeout_s: float) -> Sample:
        opts = self.options
        started = self._clock()
        deadline = started + timeout_s
        # Timestamps before any read: the counters moved during [previous start, this start].
        wall = self._wall_clock()
        host_cpu = host.read_proc_stat(opts.host_root)
        extras: Dict[str, Any] = {"net_dev": host.read_net_dev(opts.host_root),
                                  "numa_cell_cpus": self._cell_cpus,
                                  "host_info": self._host_info}
        try:
            # Host memory runs beside the stats calls. Measured: while a QEMU is stopped, per-cell
            # getMemoryStats can stall for up to seconds (until other traffic on the client wakes
            # it), so a late answer is not waited for: the last one stands, marked by its age.
            memory_future = self.connection.submit(_memory_stats(list(self._cell_cpus)))
            result = self.stats.collect(deadline)
        except (LibvirtUnavailable, CallTimeout, libvirt.libvirtError) as e:
            why = _one_line(e)
            log.warning("libvirt sample failed: %s", why)
            return Sample(wall_time_s=wall, monotonic_s=started, up=False, node=self._node,
                          host_cpu=host_cpu, error=why, extras=extras)
        raw = result.raw
        host_memory, cells, memory_age_s = self._host_memory(memory_future, deadline)
        extras["numa_cells"] = cells
        extras["host_memory_age_s"] = memory_age_s
        domains: Dict[str, DomainStats] = {}
        unresponsive = set(result.unresponsive)
        for dom, uuid, name, stats in raw:
            complete = uuid not in unresponsive and not bulk.incomplete_groups(stats, opts.groups)
            if not complete:
                unresponsive.add(uuid)
            domains[uuid] = DomainStats(uuid=uuid, name=name, stats=stats, complete=complete)
        self._refresh_xml([(dom, uuid) for dom, uuid, _n, _s in raw], deadline)
        if opts.read_qemu_pids:
            extras["qemu_pids"] = _qemu_pids(opts.run_dir, domains.values())
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
                if f.exception() is None:
                    self._last_memory = f.result() + (self._clock(),)

            future.add_done_callback(late)
        except (libvirt.libvirtError, LibvirtUnavailable) as e:
            log.warning("host memory stats failed: %s", _one_line(e))
        if self._last_memory is None:
            return None, {}, 0.0
        host_memory, cells, taken = self._last_memory
        return host_memory, cells, max(0.0, self._clock() - taken)

    def _refresh_xml(self, domains: List[Tuple[libvirt.virDomain, str]], deadline: float) -> None:
        """Fetch the XML of domains the cache lacks (new, or changed per an event)."""
        self.xml_cache.forget_except(uuid for _dom, uuid in domains)
        missing = set(self.xml_cache.missing(uuid for _dom, uuid in domains))
        if not missing:
            return
        todo = [(dom, uuid) for dom, uuid in domains if uuid in missing]

        def fetch(conn: libvirt.virConnect) -> List[Tuple[str, str]]:
            out = []
            for dom, uuid in todo:
                try:
                    out.append((uuid, dom.XMLDesc(0)))
                except libvirt.libvirtError as e:
                    if e.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                        log.warning("cannot read XML of domain %s: %s", uuid, e.get_error_message())
            return out

        try:
            for uuid, xml in self.connection.call(fetch, max(0.0, deadline - self._clock())):
                self.xml_cache.store(uuid, xml)
        except (LibvirtUnavailable, CallTimeout, libvirt.libvirtError) as e:
            # Identity series wait for the next scrape; the stats of this one stand.
            log.warning("domain XML refresh incomplete: %s", _one_line(e))


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
