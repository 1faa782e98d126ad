"""Domain jobs (migrations, saves, dumps, backups): which domains have one, from events and state
reasons, and their virDomainGetJobStats, read for those domains only.

Which domains have a job is never asked of every domain: libvirt says it.

- ``MIGRATION_ITERATION`` arrives within half a second of a migration's start (QEMU's first dirty
  bitmap sync is its iteration 1) and at every pass after;
- a sample's state reason names the long jobs that pause a guest (paused for migration, save,
  dump, snapshot; post-copy);
- ``JOB_COMPLETED`` ends a job that succeeded (its statistics come with it) and counts it;
- a job that failed or was cancelled sends no event: the next read finds no job, and
  ``GetJobStats(COMPLETED)`` names the outcome libvirt kept; where it kept none (a cancelled
  migration on libvirt 9), a job seen running that ended without JOB_COMPLETED counts as failed.

The domains being handed over to another host are *closing*: from the source's ``SUSPENDED /
MIGRATED`` lifecycle event (QEMU stopped the vCPUs for the switch-over) until the domain stops or
resumes. While libvirtd tears down the source QEMU it holds that domain's object lock, and every
call that enumerates domains (``getAllDomainStats``, ``listAllDomains``, even ``numOfDomains``)
waits for it: measured 1.2-2.0 s here, where QEMU takes that long to exit. The stats calls leave
closing domains out (stuck.py) and nothing here calls on them.

No libvirt call runs on the event-loop thread: handlers only record; one worker thread reads the job
statistics through ``Connection.call`` (deadline, request budget), at most every ``interval_s``.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from typing import Any, Callable, Dict, FrozenSet, Mapping, Optional, Tuple

import libvirt

from ..sample import JobReading, JobSnapshot, Sample
from .connection import CallTimeout, Connection, LibvirtUnavailable

log = logging.getLogger(__name__)

# A closing domain whose end no event announced (events lost) is let back into the calls after this.
CLOSING_MAX_S = 60.0

# (state, reason) of a domain a long job holds: seen in a sample, the domain's job is read.
JOB_STATE_REASONS = frozenset([
    (libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PAUSED_MIGRATION),
    (libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PAUSED_SAVE),
    (libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PAUSED_DUMP),
    (libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PAUSED_SNAPSHOT),
    (libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PAUSED_POSTCOPY),
    (libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_RUNNING_POSTCOPY),
])

OPERATIONS = {
    libvirt.VIR_DOMAIN_JOB_OPERATION_UNKNOWN: "unknown",
    libvirt.VIR_DOMAIN_JOB_OPERATION_START: "start",
    libvirt.VIR_DOMAIN_JOB_OPERATION_SAVE: "save",
    libvirt.VIR_DOMAIN_JOB_OPERATION_RESTORE: "restore",
    libvirt.VIR_DOMAIN_JOB_OPERATION_MIGRATION_IN: "migration_in",
    libvirt.VIR_DOMAIN_JOB_OPERATION_MIGRATION_OUT: "migration_out",
    libvirt.VIR_DOMAIN_JOB_OPERATION_SNAPSHOT: "snapshot",
    libvirt.VIR_DOMAIN_JOB_OPERATION_SNAPSHOT_REVERT: "snapshot_revert",
    libvirt.VIR_DOMAIN_JOB_OPERATION_DUMP: "dump",
    libvirt.VIR_DOMAIN_JOB_OPERATION_BACKUP: "backup",
}
TYPES = {
    libvirt.VIR_DOMAIN_JOB_NONE: "none",
    libvirt.VIR_DOMAIN_JOB_BOUNDED: "bounded",
    libvirt.VIR_DOMAIN_JOB_UNBOUNDED: "unbounded",
    libvirt.VIR_DOMAIN_JOB_COMPLETED: "completed",
    libvirt.VIR_DOMAIN_JOB_FAILED: "failed",
    libvirt.VIR_DOMAIN_JOB_CANCELLED: "cancelled",
}
ENDED_TYPES = (libvirt.VIR_DOMAIN_JOB_COMPLETED, libvirt.VIR_DOMAIN_JOB_FAILED, libvirt.VIR_DOMAIN_JOB_CANCELLED)


def operation_name(value: Any) -> str:
    return OPERATIONS.get(int(value), "unknown") if value is not None else "unknown"


def type_name(value: Any) -> str:
    return TYPES.get(int(value), "unknown") if value is not None else "unknown"


class DomainJobs:
    """Tracks active jobs from events; reads their statistics when ``read_stats`` is on."""

    def __init__(self, connection: Connection, xml_cache: Any, *, read_stats: bool = True,
                 interval_s: float = 1.0, call_timeout_s: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if interval_s <= 0:
            raise ValueError("must be > 0")
        self.connection = connection
        self.xml_cache = xml_cache
        self.read_stats = read_stats
        self.interval_s = interval_s
        self.call_timeout_s = call_timeout_s
        self._clock = clock
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        # uuid -> name of domains with a job, as far as we know
        self._active: Dict[str, str] = {}
        self._readings: Dict[str, JobReading] = {}
        self._completed: Dict[Tuple[str, str], int] = {}
        # uuid -> when it started closing
        self._closing: Dict[str, float] = {}
        # the last ended job counted per domain, by (operation, time_elapsed, data_processed)
        self._counted: Dict[str, Tuple[Any, Any, Any]] = {}
        self._last_operation: Dict[str, Any] = {}
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    # --- wiring ------------------------------------------------------------------------------------

    def start(self) -> None:
        c = self.connection
        c.on_event(libvirt.VIR_DOMAIN_EVENT_ID_MIGRATION_ITERATION, self.on_iteration)
        c.on_event(libvirt.VIR_DOMAIN_EVENT_ID_JOB_COMPLETED, self.on_job_completed)
        self.xml_cache.subscribe(self.on_lifecycle)
        if self.read_stats:
            self._thread = threading.Thread(target=self._run, name="domain-jobs", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        with self._wake:
            self._wake.notify_all()

    # --- event handlers (event-loop thread: record, never call libvirt) ----------------------------

    def on_iteration(self, conn: Any, dom: Any, _iteration: int) -> None:
        self._mark_active(dom.UUIDString(), dom.name())

    def on_job_completed(self, conn: Any, dom: Any, params: Mapping[str, Any]) -> None:
        uuid, name = dom.UUIDString(), dom.name()
        record = dict(params, type=libvirt.VIR_DOMAIN_JOB_COMPLETED)
        with self._lock:
            self._active.pop(uuid, None)
            self._readings.pop(uuid, None)
            self._count(uuid, name, record)

    def _count(self, uuid: str, name: str, record: Mapping[str, Any]) -> None:
        """Count one ended job (lock held), once: the JOB_COMPLETED event and a later read of the
        completed statistics (kept for operators: read with KEEP_COMPLETED) are the same job."""
        signature = (record.get("operation"), record.get("time_elapsed"), record.get("data_processed"))
        if self._counted.get(uuid) == signature:
            return
        self._counted[uuid] = signature
        key = (operation_name(record.get("operation")), type_name(record.get("type")))
        self._completed[key] = self._completed.get(key, 0) + 1
        log.log(logging.INFO if key[1] == "completed" else logging.WARNING,
                "job %s: domain %s, %s", key[1], name, key[0])

    def on_lifecycle(self, uuid: str, event: int, detail: int) -> None:
        """The XML cache's lifecycle listener."""
        with self._lock:
            if event == libvirt.VIR_DOMAIN_EVENT_SUSPENDED and detail == libvirt.VIR_DOMAIN_EVENT_SUSPENDED_MIGRATED:
                self._closing[uuid] = self._clock()
            elif event in (libvirt.VIR_DOMAIN_EVENT_STOPPED, libvirt.VIR_DOMAIN_EVENT_UNDEFINED,
                           libvirt.VIR_DOMAIN_EVENT_RESUMED, libvirt.VIR_DOMAIN_EVENT_STARTED):
                self._closing.pop(uuid, None)
            if event in (libvirt.VIR_DOMAIN_EVENT_STOPPED, libvirt.VIR_DOMAIN_EVENT_UNDEFINED):
                # Gone from this host: its job went with it (a failed one is read no more).
                self._active.pop(uuid, None)
                self._readings.pop(uuid, None)
                self._counted.pop(uuid, None)
                self._last_operation.pop(uuid, None)

    def _mark_active(self, uuid: str, name: str) -> None:
        with self._wake:
            new = uuid not in self._active
            self._active[uuid] = name
            if new:
                self._wake.notify()

    # --- what the sampler and the collector read ---------------------------------------------------

    def closing(self) -> FrozenSet[str]:
        """Domains the stats calls must leave out now (see the module docs)."""
        now = self._clock()
        with self._lock:
            for uuid in [u for u, since in self._closing.items() if now - since > CLOSING_MAX_S]:
                del self._closing[uuid]
            return frozenset(self._closing)

    def observe(self, sample: Sample) -> None:
        """A sample's state reasons name domains a long job holds (cheap: the scrape calls it)."""
        if not sample.up:
            return
        for uuid, dom in sample.domains.items():
            if (dom.state, dom.reason) in JOB_STATE_REASONS and uuid not in self._active:
                self._mark_active(uuid, dom.name)

    def snapshot(self) -> JobSnapshot:
        with self._lock:
            return JobSnapshot(dict(self._readings), dict(self._completed), frozenset(self._closing))

    # --- the worker --------------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._wake:
                while not self._active and not self._stop.is_set():
                    self._wake.wait(5.0)
                todo = dict(self._active)
                closing = set(self._closing)
            if self._stop.is_set():
                return
            started = self._clock()
            for uuid, name in todo.items():
                if uuid not in closing:  # a call on it would wait for libvirtd's teardown
                    try:
                        self.read_one(uuid, name)
                    except Exception:  # the worker must outlive any bug in one read
                        log.exception("job statistics of domain %s", name)
            self._stop.wait(max(0.0, self.interval_s - (self._clock() - started)))

    def read_one(self, uuid: str, name: str) -> None:
        """Read one domain's job; when it has none any more, count how it ended."""

        def read(conn: libvirt.virConnect) -> Tuple[Dict[str, Any], Optional[Dict[str, Any]]]:
            dom = conn.lookupByUUIDString(uuid)
            stats = dom.jobStats(0)
            ended = None
            if stats.get("type", libvirt.VIR_DOMAIN_JOB_NONE) == libvirt.VIR_DOMAIN_JOB_NONE:
                ended = dom.jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED
                                     | libvirt.VIR_DOMAIN_JOB_STATS_KEEP_COMPLETED)
            return stats, ended

        now = self._clock()
        try:
            stats, ended = self.connection.call(read, self.call_timeout_s)
        except libvirt.libvirtError as e:
            # Gone, not running, or no job statistics here (an incoming migration's destination):
            # nothing to show; the next event or state reason brings it back if it has a job.
            log.debug("no job statistics for domain %s: %s", name, e.get_error_message())
            with self._lock:
                self._active.pop(uuid, None)
                self._readings.pop(uuid, None)
            return
        except (CallTimeout, LibvirtUnavailable) as e:
            log.warning("cannot read the job of domain %s: %s", name, e)
            with self._lock:
                old = self._readings.get(uuid)
                if old is not None:
                    self._readings[uuid] = dataclasses.replace(old, error=str(e))
            return
        with self._lock:
            if uuid not in self._active:
                return  # ended meanwhile (JOB_COMPLETED, stopped)
            if ended is None:
                self._readings[uuid] = JobReading(uuid, name, type_name(stats.get("type")),
                                                  operation_name(stats.get("operation")), stats, now)
                self._last_operation[uuid] = stats.get("operation")
                return
            had_job = uuid in self._readings
            del self._active[uuid]
            self._readings.pop(uuid, None)
            if ended.get("type") in ENDED_TYPES:
                self._count(uuid, name, ended)
            elif had_job:
                # A job we saw running ended with no JOB_COMPLETED and no record kept (libvirt keeps
                # none for a cancelled migration): it did not complete.
                self._count(uuid, name, {"operation": self._last_operation.pop(uuid, None),
                                         "type": libvirt.VIR_DOMAIN_JOB_FAILED})
