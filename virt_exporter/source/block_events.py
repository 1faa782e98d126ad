"""Block events: BLOCK_THRESHOLD and IO_ERROR_REASON counters, and (opt-in) arming write thresholds.

vdsm moved from polling drive watermarks to QEMU's write threshold: ``setBlockThreshold(dev, bytes)``
arms a one-shot trigger on a layer's storage, and QEMU reports the first write that ends beyond it
(``VIR_DOMAIN_EVENT_ID_BLOCK_THRESHOLD``), then disarms it. What thin provisioning prevents shows up
as ``VIR_DOMAIN_EVENT_ID_IO_ERROR_REASON`` with reason "enospc" and the guest paused (state 3,
reason 5 = I/O error).

Counting needs only a read-only connection (events are delivered to it). Arming is a write call: it is
done only when ``arm_thresholds`` is on, and then the Connection must have been opened read-write.
The armed value is physical − limit (``WatermarkPolicy.threshold_to_arm``); a layer is (re-)armed

- after every (re)connect (all domains),
- when a domain starts or a block job ends (that domain),
- from ``observe()`` (each scrape's sample): a hot-plugged disk once the XML cache has re-read the
  domain, and a layer whose storage grew past the watermark again after a threshold event (an
  extension).

Lifecycle events come through the XML cache's ``subscribe``: libvirt refuses a second registration
of one event ID on a connection ("event callback already tracked", measured), and the cache owns
LIFECYCLE and DEVICE_ADDED.

No libvirt call runs on the event-loop thread: handlers only count and queue; one worker thread does
the calls through ``Connection.call`` (deadline, request budget).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Set, Tuple

import libvirt

from ..sample import BlockEventCounts, DomainStats, Sample
from . import bulk
from .connection import CallTimeout, Connection, LibvirtUnavailable
from .domxml import xml_or_none

log = logging.getLogger(__name__)

# libvirt emits a threshold armed through "vda" twice, as "vda" and as "vda[<top index>]", with the
# same path, threshold and excess, back to back (measured: 0.4 ms apart). One firing, one count.
DUPLICATE_WINDOW_S = 2.0
# A layer whose arming failed is not tried again (from observe) for this long.
ARM_RETRY_S = 60.0

_DEV_RE = re.compile(r"^(?P<target>[^\[\]]+)(?:\[(?P<index>\d+)\])?$")

ALL = "*"
# What arming needs to know: which domains run, and every disk layer's sizes and armed threshold.
GROUPS = ("state", "block")


def parse_device(dev: str) -> Tuple[str, Optional[int]]:
    """("vda", None) for "vda", ("vda", 3) for "vda[3]"."""
    m = _DEV_RE.match(dev or "")
    if not m:
        return dev, None
    index = m.group("index")
    return m.group("target"), (int(index) if index is not None else None)


def io_error_reason(reason: str) -> str:
    """libvirt's reason string ("enospc", or "" for any other error) as a label value."""
    return reason or "unspecified"


# (domain stats, its disks by target) -> device -> the write threshold to set now. The rule is the
# watermark policy's (calc/watermark.py: thresholds_due); the wiring hands it in.
ThresholdsDue = Callable[[DomainStats, Mapping[str, Any]], Mapping[str, int]]


class BlockEvents:
    """Counts block-threshold and I/O-error events per disk; arms thresholds when asked to.

    ``xml_cache`` is the ``DomainXMLCache`` (``snapshot()``, ``missing()``, ``store()``): arming needs
    each disk's type and format to tell chunked volumes apart. ``thresholds_due`` says which
    thresholds a domain needs now; this class only counts events and makes the calls.
    """

    def __init__(self, connection: Connection, xml_cache: Any, thresholds_due: ThresholdsDue = lambda dom, disks: {},
                 arm_thresholds: bool = False, *, call_timeout_s: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if arm_thresholds and connection.read_only:
            raise ValueError("arming block thresholds needs a read-write libvirt connection")
        self.connection = connection
        self.xml_cache = xml_cache
        self.thresholds_due = thresholds_due
        self.arm_thresholds = arm_thresholds
        self.call_timeout_s = call_timeout_s
        self._clock = clock
        self._lock = threading.Lock()
        self._threshold_events: Dict[Tuple[str, str, Optional[int]], int] = {}
        self._io_errors: Dict[Tuple[str, str, str, str], int] = {}
        self._recent: Dict[Tuple[str, str, int, int], float] = {}
        self._arm_errors_total = 0
        # Work for the worker: domains to reconcile (ALL for every domain).
        self._work = threading.Condition(self._lock)
        self._pending: Set[str] = set()
        self._retry_after: Dict[Tuple[str, str], float] = {}
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    # --- wiring ------------------------------------------------------------------------------------

    def start(self) -> None:
        """Subscribe to the connection's events (kept across reconnects) and start the worker."""
        c = self.connection
        c.on_event(libvirt.VIR_DOMAIN_EVENT_ID_BLOCK_THRESHOLD, self.on_block_threshold)
        c.on_event(libvirt.VIR_DOMAIN_EVENT_ID_IO_ERROR_REASON, self.on_io_error)
        self.xml_cache.subscribe(self.on_lifecycle)
        if not self.arm_thresholds:
            return
        c.on_event(libvirt.VIR_DOMAIN_EVENT_ID_BLOCK_JOB_2, self.on_block_job)
        c.on_connect(self.on_connect)
        self._thread = threading.Thread(target=self._run, name="block-thresholds", daemon=True)
        self._thread.start()
        self.request_reconcile(ALL)

    def stop(self) -> None:
        self._stop.set()
        with self._work:
            self._work.notify_all()

    # --- event handlers (event-loop thread: count and queue, never call libvirt) -------------------

    def on_block_threshold(self, conn: Any, dom: Any, dev: str, path: str, threshold: int, excess: int) -> None:
        uuid = dom.UUIDString()
        target, index = parse_device(dev)
        now = self._clock()
        with self._lock:
            for key in [k for k, t in self._recent.items() if now - t > DUPLICATE_WINDOW_S]:
                del self._recent[key]
            dup_key = (uuid, path or target, int(threshold), int(excess))
            if dup_key in self._recent:
                return
            self._recent[dup_key] = now
            event_key = (uuid, target, index)
            self._threshold_events[event_key] = self._threshold_events.get(event_key, 0) + 1
        log.info("block threshold crossed: domain %s disk %s threshold %d excess %d",
                 dom.name(), dev, threshold, excess)
        if self.arm_thresholds:
            # One-shot: QEMU disarmed it. Re-armed at once if the storage already grew, else when
            # observe() sees it grow.
            self.request_reconcile(uuid)

    def on_io_error(self, conn: Any, dom: Any, src_path: str, dev_alias: str, action: int, reason: str) -> None:
        key = (dom.UUIDString(), src_path or "", dev_alias or "", io_error_reason(reason))
        with self._lock:
            self._io_errors[key] = self._io_errors.get(key, 0) + 1
        log.warning("I/O error on domain %s disk %s (%s): reason %s, action %d",
                    dom.name(), src_path, dev_alias, io_error_reason(reason), action)

    def on_lifecycle(self, uuid: str, event: int, detail: int) -> None:
        """The XML cache's lifecycle listener."""
        if event == libvirt.VIR_DOMAIN_EVENT_UNDEFINED:
            # The domain is gone for good: its counters go with it (a new one gets a new UUID).
            with self._lock:
                # The three dicts are keyed by tuples of different shapes, all starting with the UUID.
                counters: List[Dict[Any, Any]] = [self._threshold_events, self._io_errors, self._retry_after]
                for d in counters:
                    for key in [k for k in d if k[0] == uuid]:
                        del d[key]
            return
        if self.arm_thresholds and event == libvirt.VIR_DOMAIN_EVENT_STARTED:
            self.request_reconcile(uuid)

    def on_block_job(self, conn: Any, dom: Any, disk: str, _job_type: int, status: int) -> None:
        # READY: an active commit now writes into its base layer; COMPLETED: a pivot changed which
        # image is the top and what storage is under it.
        if status in (libvirt.VIR_DOMAIN_BLOCK_JOB_COMPLETED, libvirt.VIR_DOMAIN_BLOCK_JOB_READY):
            self.request_reconcile(dom.UUIDString())

    def on_connect(self, conn: Any) -> None:
        # Events while we were disconnected are lost, thresholds may have fired: look at everything.
        self.request_reconcile(ALL)

    # --- what the collector reads ------------------------------------------------------------------

    def snapshot(self) -> BlockEventCounts:
        with self._lock:
            return BlockEventCounts(dict(self._threshold_events), dict(self._io_errors), self._arm_errors_total)

    def observe(self, sample: Sample, domain_info: Mapping[str, Any]) -> None:
        """Queue arming for layers a sample shows unarmed (or armed at a stale value) that should be.

        Cheap and non-blocking (the scrape calls it): it only compares and queues; the worker re-reads
        the domain's stats before it sets anything.
        """
        if not self.arm_thresholds or not sample.up:
            return
        now = self._clock()
        for uuid, dom in sample.domains.items():
            if not dom.active or not dom.complete:
                continue
            info = domain_info.get(uuid)
            if info is None:
                continue
            if self._arms_due(uuid, dom, {d.target: d for d in info.disks}, now):
                self.request_reconcile(uuid)

    def _arms_due(self, uuid: str, dom: DomainStats, disks: Mapping[str, Any], now: float) -> List[Tuple[str, int]]:
        due = []
        for device, threshold in self.thresholds_due(dom, disks).items():
            with self._lock:
                if self._retry_after.get((uuid, device), 0.0) > now:
                    continue
            due.append((device, threshold))
        return due

    # --- the worker --------------------------------------------------------------------------------

    def request_reconcile(self, uuid: str) -> None:
        """Ask the worker to re-read a domain's block stats (ALL: every domain) and arm what is due."""
        with self._work:
            self._pending.add(uuid)
            self._work.notify()

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._work:
                while not self._pending and not self._stop.is_set():
                    self._work.wait(1.0)
                pending, self._pending = self._pending, set()
            if self._stop.is_set():
                return
            try:
                self.reconcile(None if ALL in pending else sorted(pending))
            except (LibvirtUnavailable, CallTimeout) as e:
                # Not connected yet (a connect hook runs before the connection is published) or busy.
                log.debug("threshold arming postponed: %s", e)
                self._stop.wait(1.0)
                with self._work:
                    self._pending |= pending
            except libvirt.libvirtError as e:
                log.warning("threshold arming failed: %s", e.get_error_message())
                self._stop.wait(1.0)
            except Exception:  # the worker must outlive any bug in one round
                log.exception("threshold arming failed")
                self._stop.wait(1.0)

    def reconcile(self, uuids: Optional[List[str]]) -> int:
        """Read the block stats of the given domains (None: all active ones), fetch the XML the cache
        lacks, and set every threshold that is due. Returns how many thresholds were set."""
        timeout_s = self.call_timeout_s

        def read(conn: libvirt.virConnect) -> List[Tuple[Any, str, str, Dict[str, Any], Optional[str]]]:
            if uuids is None:
                entries = bulk.get_all_domain_stats(conn, GROUPS, backing=True, active_only=True)
            else:
                entries = bulk.domain_list_stats(conn, bulk.lookup_existing(conn, uuids), GROUPS, backing=True)
            missing = set(self.xml_cache.missing(uuid for _d, uuid, _n, _s in entries))
            out = []
            for dom, uuid, name, stats in entries:
                xml = None
                if uuid in missing:
                    xml = xml_or_none(dom)
                    if xml is None:
                        continue  # gone
                out.append((dom, uuid, name, stats, xml))
            return out

        entries = self.connection.call(read, timeout_s)
        for _dom, uuid, _name, _stats, xml in entries:
            if xml is not None:
                self.xml_cache.store(uuid, xml)
        infos = self.xml_cache.snapshot()
        armed = 0
        now = self._clock()
        for _dom, uuid, name, stats, _xml in entries:
            ds = DomainStats(uuid=uuid, name=name, stats=stats)
            info = infos.get(uuid)
            if not ds.active or info is None or "block.count" not in stats:
                continue
            for device, threshold in self._arms_due(uuid, ds, {d.target: d for d in info.disks}, now):
                armed += self._arm(uuid, name, device, threshold)
        return armed

    def _arm(self, uuid: str, name: str, device: str, threshold: int) -> int:
        def arm(conn: libvirt.virConnect) -> None:
            # Looked up on the lane the call runs on: a domain object belongs to its connection.
            conn.lookupByUUIDString(uuid).setBlockThreshold(device, threshold)

        try:
            self.connection.call(arm, self.call_timeout_s)
        except (libvirt.libvirtError, CallTimeout, LibvirtUnavailable) as e:
            why = e.get_error_message() if isinstance(e, libvirt.libvirtError) else str(e)
            with self._lock:
                self._arm_errors_total += 1
                self._retry_after[(uuid, device)] = self._clock() + ARM_RETRY_S
            log.warning("cannot set block threshold on domain %s disk %s: %s", name, device, why)
            return 0
        with self._lock:
            self._retry_after.pop((uuid, device), None)
        log.debug("block threshold on domain %s disk %s set at %d bytes", name, device, threshold)
        return 1
