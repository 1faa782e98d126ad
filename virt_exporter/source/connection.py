"""The one persistent libvirt connection: event loop, close callback, reconnect with backoff, events
registered again after every reconnect, and a budget of requests in flight with a deadline per call.

libvirtd serves at most 5 requests in flight per client connection by default
(``max_client_requests``). A call we stopped waiting for (a hung QEMU) keeps its slot until libvirtd
answers, so every call takes a slot from a semaphore that is released only when the call really
returns, and a call that finds no free slot before its deadline fails fast instead of queueing.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, List, Optional, Tuple, TypeVar

import libvirt

log = logging.getLogger(__name__)

T = TypeVar("T")

# One request slot is kept free for event (re)registration and keepalive-driven traffic.
DEFAULT_MAX_IN_FLIGHT = 4

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
        libvirt.virEventRegisterDefaultImpl()

        def run() -> None:
            while True:
                try:
                    libvirt.virEventRunDefaultImpl()
                except Exception:  # the loop must survive anything a callback raises
                    log.exception("libvirt event loop iteration failed")
                    time.sleep(0.1)

        threading.Thread(target=run, name="libvirt-events", daemon=True).start()
        _event_loop_started = True


class LibvirtUnavailable(Exception):
    """No usable connection right now (libvirtd down, reconnecting, or no request slot free)."""


class CallTimeout(Exception):
    """A libvirt call did not answer before its deadline; it keeps running in the background."""


class Connection:
    """A libvirt connection that survives libvirtd restarts.

    ``call(fn, timeout_s)`` runs ``fn(virConnect)`` on a worker thread and waits at most
    ``timeout_s``. A libvirtError is re-raised after probing the connection with a cheap call
    (getLibVersion, as vdsm does): only when the probe fails too is the connection declared broken
    and a reconnect started. The error code alone never decides it: after a libvirtd restart the
    first call fails with a broken pipe (38) while isAlive() still says 1, later ones with
    "client socket is closed" (1).
    """

    def __init__(self, uri: str, read_only: bool = True, *,
                 max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
                 backoff_initial_s: float = 0.5, backoff_max_s: float = 30.0,
                 keepalive_interval_s: int = 5, keepalive_count: int = 3) -> None:
        self.uri = uri
        self.read_only = read_only
        self.max_in_flight = max_in_flight
        self._backoff_initial_s = backoff_initial_s
        self._backoff_max_s = backoff_max_s
        self._keepalive = (keepalive_interval_s, keepalive_count)
        self._lock = threading.Lock()
        self._conn: Optional[libvirt.virConnect] = None
        self._event_handlers: List[Tuple[int, Callable[..., Any]]] = []
        self._connect_hooks: List[Callable[[libvirt.virConnect], None]] = []
        self._slots = threading.BoundedSemaphore(max_in_flight)
        # Worker threads: one per slot, plus room for calls abandoned past their deadline.
        self._pool = ThreadPoolExecutor(max_workers=max_in_flight + 2, thread_name_prefix="libvirt-call")
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self.reconnects_total = 0
        self.connects_total = 0
        self.last_error = ""
        self.in_flight = 0

    # --- lifecycle -------------------------------------------------------------------------------

    def start(self, wait_s: float = 0.0) -> None:
        """Start the event loop and the connect/reconnect thread; optionally wait for the first
        connection (a libvirtd that is not up yet is not an error: we keep trying)."""
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
            conn, self._conn = self._conn, None
        if conn is not None:
            self._teardown(conn)
        self._pool.shutdown(wait=False)

    @property
    def up(self) -> bool:
        return self._conn is not None

    def on_event(self, event_id: int, callback: Callable[..., Any]) -> None:
        """Register a domain event callback (``domainEventRegisterAny`` signature without the opaque);
        it is registered on the current connection and again after every reconnect."""
        with self._lock:
            self._event_handlers.append((event_id, callback))
            conn = self._conn
        if conn is not None:
            self._register_event(conn, event_id, callback)

    def on_connect(self, hook: Callable[[libvirt.virConnect], None]) -> None:
        """Run ``hook(conn)`` after every successful (re)connect (on the connect thread)."""
        with self._lock:
            self._connect_hooks.append(hook)
            conn = self._conn
        if conn is not None:
            self._run_hook(hook, conn)

    # --- calls -----------------------------------------------------------------------------------

    def call(self, fn: Callable[[libvirt.virConnect], T], timeout_s: float) -> T:
        """Run ``fn(conn)`` with a deadline. Raises LibvirtUnavailable, CallTimeout or libvirtError."""
        conn = self._conn
        if conn is None:
            raise LibvirtUnavailable(self.last_error or "not connected")
        deadline = time.monotonic() + max(0.0, timeout_s)
        if not self._slots.acquire(timeout=max(0.0, timeout_s)):
            raise LibvirtUnavailable("all %d libvirt request slots busy" % self.max_in_flight)
        with self._lock:
            self.in_flight += 1

        def run() -> T:
            try:
                return fn(conn)
            finally:
                with self._lock:
                    self.in_flight -= 1
                self._slots.release()

        try:
            future = self._pool.submit(run)
        except RuntimeError as e:  # pool shut down: we are stopping
            with self._lock:
                self.in_flight -= 1
            self._slots.release()
            raise LibvirtUnavailable(str(e))
        try:
            return future.result(timeout=max(0.0, deadline - time.monotonic()))
        except libvirt.libvirtError as e:
            self._check_broken(conn, e)
            raise
        except TimeoutError:
            raise CallTimeout("libvirt call did not answer within %.2fs" % timeout_s) from None

    def _check_broken(self, conn: libvirt.virConnect, error: libvirt.libvirtError) -> None:
        try:
            conn.getLibVersion()
        except libvirt.libvirtError as probe_error:
            self._mark_broken(conn, "libvirt connection lost: %s" % (probe_error.get_error_message() or error))

    # --- connect loop ----------------------------------------------------------------------------

    def _run(self) -> None:
        backoff_s = self._backoff_initial_s
        while not self._stop.is_set():
            if self._conn is not None:
                self._wake.wait(1.0)
                self._wake.clear()
                continue
            try:
                self._connect()
                backoff_s = self._backoff_initial_s
            except libvirt.libvirtError as e:
                msg = (e.get_error_message() or str(e)).strip()
                if msg != self.last_error:
                    log.warning("cannot connect to libvirt at %s: %s (retrying)", self.uri, msg)
                self.last_error = msg
                self._stop.wait(backoff_s)
                backoff_s = min(backoff_s * 2, self._backoff_max_s)

    def _connect(self) -> None:
        conn = libvirt.openReadOnly(self.uri) if self.read_only else libvirt.open(self.uri)
        try:
            conn.setKeepAlive(*self._keepalive)
        except libvirt.libvirtError:
            pass  # some drivers (test://) have no keepalive
        try:
            conn.registerCloseCallback(self._on_close, None)
        except libvirt.libvirtError:
            pass  # in-process drivers have no close callback
        with self._lock:
            handlers = list(self._event_handlers)
            hooks = list(self._connect_hooks)
        for event_id, callback in handlers:
            self._register_event(conn, event_id, callback)
        for hook in hooks:
            self._run_hook(hook, conn)
        with self._lock:
            self._conn = conn
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
            except Exception:
                log.exception("libvirt event handler failed")

        try:
            callback_id = conn.domainEventRegisterAny(None, event_id, relay, None)
            # Kept on the connection itself: teardown of an old connection must deregister its own ids.
            conn.__dict__.setdefault("_vexp_event_ids", []).append(callback_id)
        except libvirt.libvirtError as e:
            log.warning("cannot register libvirt event %d: %s", event_id, e.get_error_message())

    def _run_hook(self, hook: Callable[[libvirt.virConnect], None], conn: libvirt.virConnect) -> None:
        try:
            hook(conn)
        except libvirt.libvirtError as e:
            log.warning("libvirt connect hook failed: %s", e.get_error_message())
        except Exception:
            log.exception("libvirt connect hook failed")

    def _on_close(self, conn: libvirt.virConnect, reason: int, opaque: Any) -> None:
        reasons = {0: "error", 1: "end of file", 2: "keepalive timeout", 3: "client closed"}
        self._mark_broken(conn, "libvirt connection closed (%s)" % reasons.get(reason, reason))

    def _mark_broken(self, conn: libvirt.virConnect, why: str) -> None:
        with self._lock:
            if self._conn is not conn:
                return  # already replaced
            self._conn = None
        self.last_error = why
        log.warning("%s; reconnecting", why)
        # Closing from the event-loop thread (close callback) must not block it: do it elsewhere.
        threading.Thread(target=self._teardown, args=(conn,), daemon=True).start()
        self._wake.set()

    def _teardown(self, conn: libvirt.virConnect) -> None:
        for callback_id in conn.__dict__.get("_vexp_event_ids", []):
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

