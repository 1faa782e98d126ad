"""The persistent libvirt connection: event loop, close callback, reconnect with backoff, events
registered again after every reconnect, and calls with a deadline that a stuck QEMU cannot stall.

Three facts measured on the test bed shape it:

* libvirtd serves at most 5 requests in flight per client connection (``max_client_requests``);
* while one call on a connection is blocked on a stopped QEMU, *other* calls on the same connection
  can stall for seconds (``getMemoryStats(cell)`` waited 5 s, the client keepalive interval, every
  time), while the same calls on a second connection answer in a millisecond;
* a call on a ``virDomain`` runs on the connection that domain object was made by, whatever
  connection it is passed to: ``connB.domainListGetStats([domains listed on connA])`` travels over
  connA (we shut connA's socket down and the call failed with "broken pipe"). So every call that
  names domains looks them up on its own connection first (see ``stuck.py``).

So the connection is a small set of *lanes*, each its own ``virConnect`` to the same URI:

* the primary lane carries events, the close callback and *cheap* calls (``cheap=True``: listing,
  XML, host memory — answered by libvirtd itself, never by a QEMU);
* stats lanes carry everything that may wait on a QEMU monitor.

A call we stopped waiting for (``abandon``) taints its lane until it really returns; new calls go to
clean lanes only. Lanes are opened and closed by the connect thread, never on a caller's path (an
open against a hung libvirtd blocks): when a lane is tainted a replacement is opened beside it, and
surplus lanes are closed again once their stuck calls return.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FuturesTimeout
from typing import Any, Callable, List, Optional, Tuple, TypeVar

import libvirt

from ..sample import ConnectionHealth

log = logging.getLogger(__name__)

T = TypeVar("T")

# Calls in flight per lane: one below libvirtd's default of 5, keeping room for keepalive and events.
PER_LANE_IN_FLIGHT = 4
# A surplus lane (opened beside a tainted or busy one) is closed after this long unused.
SURPLUS_IDLE_S = 30.0
# Lanes at most (primary included). Each QEMU stuck at once holds one abandoned call, and so one
# tainted lane, until it answers; with more than this many at once new calls fail fast with "no free
# libvirt connection" (libvirt_up 0) rather than queueing behind them.
MAX_LANES = 32

_event_loop_lock = threading.Lock()
_event_loop_started = False


def start_event_loop() -> None:
    """Register libvirt's default event loop and run it on a daemon thread, once per process.

    It must be registered before the first connection is opened, or that connection never delivers
    events nor its close callback (then a libvirtd restart is only seen as a failing call).
    """
    global _event_loop_started
    with _event_loop_lock:
        if _event_loop_started:
            return
        # libvirt prints every error to stderr by default; we log what matters ourselves.
        libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
        libvirt.virEventRegisterDefaultImpl()

        def run() -> None:
            while True:
                try:
                    libvirt.virEventRunDefaultImpl()
                except Exception as e:  # the loop must survive anything a callback raises
                    log.warning("libvirt event loop iteration failed: %s", e)
                    time.sleep(0.1)

        threading.Thread(target=run, name="libvirt-events", daemon=True).start()
        _event_loop_started = True


class LibvirtUnavailable(Exception):
    """No usable connection right now (libvirtd down, reconnecting, or every lane busy or tainted)."""


class CallTimeout(Exception):
    """A libvirt call did not answer before its deadline; it keeps running in the background."""


class _Lane:
    __slots__ = ("conn", "primary", "in_flight", "abandoned", "number", "last_used")

    def __init__(self, conn: libvirt.virConnect, primary: bool, number: int) -> None:
        self.conn = conn
        self.primary = primary
        self.number = number
        self.last_used = time.monotonic()
        self.in_flight = 0
        self.abandoned = 0  # calls we stopped waiting for that have not returned yet

    def free(self) -> bool:
        return not self.abandoned and self.in_flight < PER_LANE_IN_FLIGHT

    def __repr__(self) -> str:
        return "lane %d%s" % (self.number, " (primary)" if self.primary else "")


class Connection:
    """A libvirt connection that survives libvirtd restarts and stuck domains.

    ``submit(fn, cheap=False)`` runs ``fn(virConnect)`` on a worker thread over a clean
    lane and returns a Future; ``abandon(future)`` says we stopped waiting for it (its lane is then
    avoided until it returns); ``call(fn, timeout_s)`` does both. ``fn`` must look up any domain it
    names on the ``virConnect`` it is given (module docs). A libvirtError is re-raised after probing
    the lane with a cheap call (getLibVersion, as vdsm does): only when the probe fails too is the lane
    declared broken (the primary lane: reconnect everything). The error code alone never decides it:
    after a libvirtd restart the first call fails with a broken pipe (38) while isAlive() still says
    1, later ones with "client socket is closed" (1).

    ``lanes`` is how many lanes to keep clean: the primary one plus ``lanes - 1`` stats lanes (at
    least one).
    """

    def __init__(self, uri: str, read_only: bool = True, *, lanes: int = 2, max_lanes: int = MAX_LANES,
                 backoff_initial_s: float = 0.5, backoff_max_s: float = 30.0,
                 keepalive_interval_s: int = 5, keepalive_count: int = 3) -> None:
        self.uri = uri
        self.read_only = read_only
        self.base_stats_lanes = max(1, lanes - 1)
        self.max_lanes = max(self.base_stats_lanes + 1, max_lanes)
        self._backoff_initial_s = backoff_initial_s
        self._backoff_max_s = backoff_max_s
        self._keepalive = (keepalive_interval_s, keepalive_count)
        self._lock = threading.Lock()
        self._lanes: List[_Lane] = []   # [primary, stats lanes…] or [] when disconnected
        self._lane_numbers = 0
        self._event_handlers: List[Tuple[int, Callable[..., Any]]] = []
        self._connect_hooks: List[Callable[[libvirt.virConnect], None]] = []
        self._pool = ThreadPoolExecutor(max_workers=self.max_lanes * PER_LANE_IN_FLIGHT,
                                        thread_name_prefix="libvirt-call")
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self.reconnects_total = 0
        self.connects_total = 0
        self.last_error = ""
        self._exhausted_logged = False
        # What we know of a call and of a libvirt connection, kept here rather than on their objects:
        # the lane a call runs on, the calls we stopped waiting for, each connection's event ids
        # (teardown of an old connection deregisters its own).
        self._lane_of: "weakref.WeakKeyDictionary[Future[Any], _Lane]" = weakref.WeakKeyDictionary()
        self._abandoned: "weakref.WeakSet[Future[Any]]" = weakref.WeakSet()
        self._event_ids: "weakref.WeakKeyDictionary[libvirt.virConnect, List[int]]" = weakref.WeakKeyDictionary()

    # --- lifecycle -------------------------------------------------------------------------------

    def start(self, wait_s: float = 0.0) -> None:
        """Start the event loop and the connect thread; optionally wait for the first connection
        (a libvirtd that is not up yet is not an error: we keep trying)."""
        start_event_loop()
        self._thread = threading.Thread(target=self._run, name="libvirt-connect", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + wait_s
        while wait_s and not self.up and time.monotonic() < deadline:
            time.sleep(0.05)

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        with self._lock:
            lanes, self._lanes = self._lanes, []
        for lane in lanes:
            self._retire(lane)
        self._pool.shutdown(wait=False)

    @property
    def up(self) -> bool:
        return bool(self._lanes)

    @property
    def lanes(self) -> int:
        return len(self._lanes)

    @property
    def tainted_lanes(self) -> int:
        return sum(1 for lane in list(self._lanes) if lane.abandoned)

    def on_event(self, event_id: int, callback: Callable[..., Any]) -> None:
        """Register a domain event callback (``domainEventRegisterAny`` signature without the opaque);
        it is registered on the current connection and again after every reconnect."""
        with self._lock:
            self._event_handlers.append((event_id, callback))
            conn = self._lanes[0].conn if self._lanes else None
        if conn is not None:
            self._register_event(conn, event_id, callback)

    def health(self) -> ConnectionHealth:
        return ConnectionHealth(reconnects_total=self.reconnects_total)

    def on_connect(self, hook: Callable[[libvirt.virConnect], None]) -> None:
        """Run ``hook(conn)`` after every successful (re)connect (on the connect thread)."""
        with self._lock:
            self._connect_hooks.append(hook)
            conn = self._lanes[0].conn if self._lanes else None
        if conn is not None:
            self._run_hook(hook, conn)

    # --- calls -----------------------------------------------------------------------------------

    def _pick_lane(self, cheap: bool) -> _Lane:
        """The clean lane with the fewest calls in flight; cheap calls prefer the primary lane, calls
        that may wait on a QEMU never use it. Never opens a connection itself (that can block)."""
        with self._lock:
            if not self._lanes:
                raise LibvirtUnavailable(self.last_error or "not connected")
            primary, stats = self._lanes[0], self._lanes[1:]
            if cheap and primary.free():
                lane: Optional[_Lane] = primary
            else:
                clean = [lane for lane in stats if lane.free()]
                lane = min(clean, key=lambda lane: lane.in_flight) if clean else None
            idle_clean = sum(1 for s in stats if s.free() and not s.in_flight)
            if lane is not None:
                lane.in_flight += 1
                lane.last_used = time.monotonic()
                if lane.in_flight == 1 and not lane.primary:
                    idle_clean -= 1
        if idle_clean < 1:
            self._wake.set()  # the connect thread opens a spare lane
        if lane is None:
            stuck = sum(s.abandoned for s in stats)
            if not self._exhausted_logged:
                log.warning("no free libvirt connection (%d lanes, %d calls stuck on a QEMU or libvirtd)",
                            len(stats) + 1, stuck)
                self._exhausted_logged = True
            raise LibvirtUnavailable("no free libvirt connection: %d calls stuck" % stuck)
        self._exhausted_logged = False
        return lane

    def submit(self, fn: Callable[[libvirt.virConnect], T], *, cheap: bool = False) -> "Future[T]":
        """Start ``fn(conn)`` on a clean lane; the caller decides how long to wait for the Future.

        ``cheap=True`` for calls libvirtd answers itself (listing, XML, host memory): they may run on
        the primary lane. Raises LibvirtUnavailable when not connected or no lane is free. A
        libvirtError inside ``fn`` probes the lane before it reaches the Future, so a dead connection
        is noticed even when nobody waits for the answer any more.
        """
        lane = self._pick_lane(cheap)

        def run() -> T:
            try:
                return fn(lane.conn)
            except libvirt.libvirtError as e:
                self._check_broken(lane, e)
                raise
            finally:
                with self._lock:
                    lane.in_flight -= 1

        try:
            future = self._pool.submit(run)
        except RuntimeError as e:  # pool shut down: we are stopping
            with self._lock:
                lane.in_flight -= 1
            raise LibvirtUnavailable(str(e)) from None
        with self._lock:
            self._lane_of[future] = lane
        return future

    def abandon(self, future: "Future[Any]") -> None:
        """We stopped waiting for ``future``: keep new calls off its lane until it returns."""
        with self._lock:
            lane = self._lane_of.get(future)
            if lane is None or future in self._abandoned or future.done():
                return
            self._abandoned.add(future)
            lane.abandoned += 1
        self._wake.set()  # a replacement lane, so that the clean ones stay at their number

        def returned(_f: "Future[Any]") -> None:
            with self._lock:
                lane.abandoned -= 1
            self._wake.set()  # maybe a surplus lane to close now

        future.add_done_callback(returned)

    def current(self, future: "Future[Any]") -> bool:
        """Whether ``future`` runs on a lane of the current connection (not one dropped since)."""
        with self._lock:
            lane = self._lane_of.get(future)
            return lane is not None and any(lane is known for known in self._lanes)

    def call(self, fn: Callable[[libvirt.virConnect], T], timeout_s: float, *, cheap: bool = False) -> T:
        """Run ``fn(conn)`` with a deadline. Raises LibvirtUnavailable, CallTimeout or libvirtError."""
        return self.wait(self.submit(fn, cheap=cheap), timeout_s)

    def wait(self, future: "Future[T]", timeout_s: float) -> T:
        """The answer of a submitted call, waited for ``timeout_s``; past that the call is abandoned
        and CallTimeout raised (an answer that came in the meantime is taken). Raises what the call
        raised otherwise."""
        try:
            return future.result(timeout=max(0.0, timeout_s))
        except FuturesTimeout:
            if future.done():
                return future.result()
            self.abandon(future)
            raise CallTimeout("libvirt call did not answer within %.2fs" % timeout_s) from None

    def _check_broken(self, lane: _Lane, error: libvirt.libvirtError) -> None:
        try:
            lane.conn.getLibVersion()
        except libvirt.libvirtError as probe_error:
            why = "libvirt connection lost: %s" % (probe_error.get_error_message() or error)
            if lane.primary:
                self._mark_broken(lane.conn, why)
            else:
                self._drop_lane(lane, why)

    # --- connect thread: reconnect, spare lanes, surplus lanes ------------------------------------

    def _run(self) -> None:
        backoff_s = self._backoff_initial_s
        while not self._stop.is_set():
            if self._lanes:
                self._keep_lanes()
                self._wake.wait(1.0)
                self._wake.clear()
                continue
            try:
                self._connect()
                backoff_s = self._backoff_initial_s
            except libvirt.libvirtError as e:
                msg = " ".join((e.get_error_message() or str(e)).split())
                if msg != self.last_error:
                    log.warning("cannot connect to libvirt at %s: %s (retrying)", self.uri, msg)
                self.last_error = msg
                self._stop.wait(backoff_s)
                backoff_s = min(backoff_s * 2, self._backoff_max_s)

    def _keep_lanes(self) -> None:
        """Keep ``base_stats_lanes`` clean stats lanes plus one idle spare (a retry of a late call
        needs a clean lane while the late one is tainted); close clean idle surplus lanes."""
        while not self._stop.is_set():
            with self._lock:
                if not self._lanes:
                    return
                stats = self._lanes[1:]
                clean = [s for s in stats if not s.abandoned]
                idle = [s for s in clean if not s.in_flight]
                want_more = (len(clean) < self.base_stats_lanes or not idle) and len(self._lanes) < self.max_lanes
                surplus = None
                if not want_more and len(clean) > self.base_stats_lanes + 1 and len(idle) > 1:
                    oldest = min(idle, key=lambda s: s.last_used)
                    if time.monotonic() - oldest.last_used > SURPLUS_IDLE_S:
                        surplus = oldest
                        self._lanes.remove(surplus)
            if surplus is not None:
                log.debug("closing surplus libvirt connection %r", surplus)
                self._retire(surplus)
                continue
            if not want_more:
                return
            try:
                lane = self._open_lane(primary=False)
            except libvirt.libvirtError as e:
                log.debug("cannot open another libvirt connection: %s", e.get_error_message())
                return
            with self._lock:
                if self._lanes and len(self._lanes) < self.max_lanes:
                    self._lanes.append(lane)
                    lane = None  # type: ignore[assignment]
            if lane is not None:  # lost a race with a reconnect: not ours to keep
                self._retire(lane)
                return

    def _open(self) -> libvirt.virConnect:
        conn = libvirt.openReadOnly(self.uri) if self.read_only else libvirt.open(self.uri)
        try:
            conn.setKeepAlive(*self._keepalive)
        except libvirt.libvirtError:
            pass  # some drivers (test://) have no keepalive
        return conn

    def _open_lane(self, primary: bool) -> _Lane:
        conn = self._open()
        with self._lock:
            self._lane_numbers += 1
            lane = _Lane(conn, primary=primary, number=self._lane_numbers)
        try:
            if primary:
                conn.registerCloseCallback(self._on_close, None)
            else:
                conn.registerCloseCallback(lambda _c, _reason, _opaque: self._drop_lane(lane, "closed"), None)
        except libvirt.libvirtError:
            pass  # in-process drivers have no close callback
        return lane

    def _connect(self) -> None:
        primary = self._open_lane(primary=True)
        extra: List[_Lane] = []
        try:
            for _ in range(self.base_stats_lanes + 1):  # + the idle spare
                extra.append(self._open_lane(primary=False))
        except libvirt.libvirtError:
            for lane in extra + [primary]:
                self._retire(lane)
            raise
        with self._lock:
            handlers = list(self._event_handlers)
            hooks = list(self._connect_hooks)
        for event_id, callback in handlers:
            self._register_event(primary.conn, event_id, callback)
        for hook in hooks:
            self._run_hook(hook, primary.conn)
        with self._lock:
            self._lanes = [primary] + extra
            if self.connects_total:
                self.reconnects_total += 1
            self.connects_total += 1
        if self.last_error or self.reconnects_total:
            log.info("connected to libvirt at %s", self.uri)
        self.last_error = ""

    def _register_event(self, conn: libvirt.virConnect, event_id: int, callback: Callable[..., Any]) -> None:
        def relay(*args: Any) -> None:
            try:
                callback(*args[:-1])  # drop the opaque
            except Exception as e:
                log.warning("libvirt event handler failed: %s: %s", type(e).__name__, e,
                            exc_info=log.isEnabledFor(logging.DEBUG))

        try:
            callback_id = conn.domainEventRegisterAny(None, event_id, relay, None)
            with self._lock:
                self._event_ids.setdefault(conn, []).append(callback_id)
        except libvirt.libvirtError as e:
            log.warning("cannot register libvirt event %d: %s", event_id, e.get_error_message())

    def _run_hook(self, hook: Callable[[libvirt.virConnect], None], conn: libvirt.virConnect) -> None:
        try:
            hook(conn)
        except libvirt.libvirtError as e:
            log.warning("libvirt connect hook failed: %s", e.get_error_message())
        except Exception as e:
            log.warning("libvirt connect hook failed: %s: %s", type(e).__name__, e,
                        exc_info=log.isEnabledFor(logging.DEBUG))

    def _on_close(self, conn: libvirt.virConnect, reason: int, _opaque: Any) -> None:
        reasons = {0: "error", 1: "end of file", 2: "keepalive timeout", 3: "client closed"}
        self._mark_broken(conn, "libvirt connection closed (%s)" % reasons.get(reason, reason))

    def _mark_broken(self, conn: libvirt.virConnect, why: str) -> None:
        with self._lock:
            if not self._lanes or self._lanes[0].conn is not conn:
                return  # already replaced
            lanes, self._lanes = self._lanes, []
        self.last_error = why
        log.warning("%s; reconnecting", why)
        for lane in lanes:
            self._retire(lane)
        self._wake.set()

    def _drop_lane(self, lane: _Lane, why: str) -> None:
        if lane.primary:
            self._mark_broken(lane.conn, why)
            return
        with self._lock:
            if lane not in self._lanes:
                return
            self._lanes.remove(lane)
        log.debug("libvirt connection %r dropped: %s", lane, why)
        self._retire(lane)
        self._wake.set()

    def _retire(self, lane: _Lane) -> None:
        """Close a lane's connection once no call runs on it any more, on a thread of its own: a close
        sends an RPC (against a hung libvirtd it blocks; from the event-loop thread, in the close
        callback, it must not block), and closing a virConnect under a call still running on it
        frees what that call uses."""
        def run() -> None:
            while True:
                with self._lock:
                    busy = lane.in_flight
                if not busy:
                    break
                time.sleep(0.2)
            self._teardown(lane.conn)

        threading.Thread(target=run, name="libvirt-close", daemon=True).start()

    def _teardown(self, conn: libvirt.virConnect) -> None:
        with self._lock:
            event_ids = self._event_ids.pop(conn, [])
        for callback_id in event_ids:
            try:
                conn.domainEventDeregisterAny(callback_id)
            except libvirt.libvirtError:
                pass
        try:
            conn.unregisterCloseCallback()
        except libvirt.libvirtError:
            pass
        try:
            conn.close()
        except libvirt.libvirtError:
            pass
