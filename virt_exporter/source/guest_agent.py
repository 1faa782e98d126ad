"""Guest information through qemu-guest-agent (virDomainGetGuestInfo): OS, hostname, filesystems.

An agent call waits on the guest: libvirt blocks it until the agent answers, with no end when the
agent is stopped inside the guest (measured here: more than 120 s). So it never runs on the scrape
path. ``GuestAgentReader`` calls each running domain from worker threads on a connection of its own,
at most every ``interval_s``, waits ``timeout_s`` for the answer and then marks the domain down
without waiting further; a domain whose call is still out is not called again until it returns.
A scrape reads the last snapshot.

virDomainGetGuestInfo needs a read-write connection: a read-only one is refused ("read only access
prevents virDomainGetGuestInfo").
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Dict, Mapping, Optional

import libvirt

from ..sample import GuestAgentReading, GuestAgentSnapshot, GuestFilesystem

log = logging.getLogger(__name__)

INFO_TYPES = (libvirt.VIR_DOMAIN_GUEST_INFO_OS | libvirt.VIR_DOMAIN_GUEST_INFO_HOSTNAME
              | libvirt.VIR_DOMAIN_GUEST_INFO_FILESYSTEM)
Targets = Mapping[str, str]   # uuid → domain name


def parse_guest_info(uuid: str, name: str, info: Mapping[str, Any], now: float) -> GuestAgentReading:
    """A reading from virDomainGetGuestInfo's typed parameters (fs.N.*, os.*, hostname)."""
    filesystems = []
    for i in range(int(info.get("fs.count", 0))):
        p = "fs.%d." % i
        total, used = info.get(p + "total-bytes"), info.get(p + "used-bytes")
        filesystems.append(GuestFilesystem(
            mountpoint=str(info.get(p + "mountpoint", "")), fstype=str(info.get(p + "fstype", "")),
            name=str(info.get(p + "name", "")), total_bytes=int(total) if total is not None else None,
            used_bytes=int(used) if used is not None else None))
    os_fields = {k[3:]: str(v) for k, v in info.items() if k.startswith("os.")}
    return GuestAgentReading(uuid=uuid, name=name, up=True, read_monotonic_s=now, os=os_fields,
                             hostname=str(info.get("hostname", "")), filesystems=tuple(filesystems))


class GuestAgentReader:
    def __init__(self, uri: str, interval_s: float = 30.0, timeout_s: float = 2.0, workers: int = 4,
                 opener: Callable[[str], Any] = libvirt.open, clock: Callable[[], float] = time.monotonic,
                 tick_s: float = 0.5) -> None:
        if not interval_s > 0 or not timeout_s > 0:
            raise ValueError("interval and timeout must be > 0")
        self.uri = uri
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self._opener = opener
        self._clock = clock
        self._tick_s = tick_s
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="guest-agent")
        self._lock = threading.Lock()
        self._targets: Dict[str, str] = {}
        self._readings: Dict[str, GuestAgentReading] = {}
        self._in_flight: Dict[str, float] = {}   # uuid → when its call started
        self._conn: Any = None
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def set_targets(self, targets: Targets) -> None:
        """The running domains to read (from each new sample)."""
        with self._lock:
            self._targets = dict(targets)
            for uuid in [u for u in self._readings if u not in self._targets]:
                del self._readings[uuid]

    def snapshot(self) -> GuestAgentSnapshot:
        with self._lock:
            return GuestAgentSnapshot(domains=dict(self._readings))

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="guest-agent-reader", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        # Calls blocked on a hung agent are not waited for.
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.refresh_once()
            except Exception:  # the reader must outlive any one bad round
                log.exception("guest agent reader round failed")
            self._stop.wait(self._tick_s)

    def _connection(self) -> Any:
        if self._conn is None:
            self._conn = self._opener(self.uri)
        return self._conn

    def refresh_once(self) -> None:
        """Call every due domain, wait at most timeout_s for the answers, mark the rest down."""
        now = self._clock()
        with self._lock:
            due = [(u, n) for u, n in self._targets.items() if u not in self._in_flight
                   and (u not in self._readings or now - self._readings[u].read_monotonic_s >= self.interval_s)]
        if not due:
            return
        try:
            conn = self._connection()
        except libvirt.libvirtError as e:
            self._mark_down(due, "cannot connect: %s" % (e.get_error_message() or e), now)
            return
        futures = []
        for uuid, name in due:
            with self._lock:
                self._in_flight[uuid] = now
            future = self._pool.submit(self._read, conn, uuid, name)
            future.add_done_callback(functools.partial(self._done, uuid=uuid, name=name))
            futures.append((uuid, name, future))
        deadline = now + self.timeout_s
        for uuid, name, future in futures:
            remaining = deadline - self._clock()
            if remaining > 0 and not future.done():
                try:
                    future.exception(timeout=remaining)
                except Exception:  # TimeoutError: handled below
                    pass
            if not future.done():
                self._mark_down([(uuid, name)], "no answer within %.1fs" % self.timeout_s, self._clock())

    def _read(self, conn: Any, uuid: str, name: str) -> GuestAgentReading:
        dom = conn.lookupByUUIDString(uuid)
        return parse_guest_info(uuid, name, dom.guestInfo(INFO_TYPES, 0), self._clock())

    def _done(self, future: "Future[GuestAgentReading]", uuid: str, name: str) -> None:
        with self._lock:
            self._in_flight.pop(uuid, None)
            if uuid not in self._targets:
                return
        error = future.exception()
        if error is None:
            reading = future.result()
        else:
            why = error.get_error_message() if isinstance(error, libvirt.libvirtError) else str(error)
            reading = GuestAgentReading(uuid=uuid, name=name, up=False, read_monotonic_s=self._clock(),
                                        error=" ".join((why or type(error).__name__).split()))
            if isinstance(error, libvirt.libvirtError) and error.get_error_code() in (
                    libvirt.VIR_ERR_INTERNAL_ERROR, libvirt.VIR_ERR_SYSTEM_ERROR, libvirt.VIR_ERR_RPC):
                self._reconnect_if_dead()
        with self._lock:
            if uuid in self._targets:
                self._readings[uuid] = reading

    def _mark_down(self, items: Any, why: str, now: float) -> None:
        with self._lock:
            for uuid, name in items:
                old = self._readings.get(uuid)
                # read_monotonic_s stays that of the last answer: the call still out decides the next one.
                self._readings[uuid] = GuestAgentReading(
                    uuid=uuid, name=name, up=False, read_monotonic_s=old.read_monotonic_s if old else now,
                    error=why)

    def _reconnect_if_dead(self) -> None:
        conn = self._conn
        if conn is None:
            return
        try:
            conn.getLibVersion()
        except libvirt.libvirtError:
            self._conn = None
