"""The perfmon engine: XenServer perfmon's alarm state machine, stepped by its own timer.

Per object (the host, each running VM) and variable, once per step (``rrd_step``)::

    start: countdown = period; last_alarm = now - inhibit_period
    on value v:
      if bad(v):                                   # v > level (sense high) / v < level (otherwise)
          countdown -= step
          if countdown <= 0:
              if now - last_alarm >= inhibit_period:
                  last_alarm = now; send alarm      # else: inhibited, nothing sent
              countdown = period                    # re-armed whether sent or inhibited
      else:
          countdown = period

"now" is the step's sample timestamp (wall clock, taken before the libvirt call). Decisions where the
seed is silent or accidental: a regex matching no data source consolidates to 0 with ``sum`` and skips
the step with ``average``/``max``; an object's first step (no earlier reading to take rates against)
only loads its config; a config that fails validation leaves the object's last valid config in force,
and is counted and logged once. As in perfmon: a matched data source without a value this step
(counter reset, new device) counts as 0.0 (ObjectReport.get_value's bare except), and a NaN value is
compared with the level like any other — neither above nor below it, so the step is good and the
countdown resets.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import threading
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Protocol, Tuple, Union

from ..sample import Sample
from .config import ObjectConfig, PerfmonConfigError, PerfmonFileConfig, VariableConfig, parse_object_config
from .datasources import DataSources, host_datasources, step_interval_s, vm_datasources

log = logging.getLogger(__name__)

HOST_KEY = ""  # the host monitor's key; VM monitors are keyed by domain UUID

# Each sent alarm is exposed as its own series (libvirt_perfmon_alarm_value) for the retention period,
# so Prometheus replicas see it at any scrape interval and Alertmanager tells alarms apart by labels.
# These caps bound how many such series there can be: per variable of an object, and in all.
DEFAULT_ALARM_RETENTION_S = 240  # four 60 s scrapes: one may fail and two still land inside
ALARMS_PER_VARIABLE = 10
ALARMS_MAX = 1000


@dataclasses.dataclass(frozen=True)
class AlarmEvent:
    """One alarm attempt: ``sent`` False means auto-inhibit dropped it."""

    time_s: float
    object_type: str
    uuid: str
    domain: str
    variable: str
    priority: str
    value: float
    sent: bool


class VariableState:
    """perfmon's ``Variable``: a VariableConfig and the state its ``update`` moves."""

    __slots__ = ("config", "countdown_s", "last_alarm_s", "value", "_matches")

    def __init__(self, config: VariableConfig, now_s: float) -> None:
        self.config = config
        self.countdown_s = config.alarm_trigger_period_s
        self.last_alarm_s = now_s - config.alarm_auto_inhibit_period_s
        self.value: Optional[float] = None
        self._matches: Dict[str, bool] = {}

    def update(self, value: float, now_s: float, step_s: int) -> Optional[bool]:
        """Feed one consolidated value. Returns True when an alarm is sent, False when an attempt is
        inhibited, None when there was no attempt."""
        cfg = self.config
        self.value = value
        if not cfg.is_bad(value):
            self.countdown_s = cfg.alarm_trigger_period_s
            return None
        self.countdown_s -= step_s
        if self.countdown_s > 0:
            return None
        self.countdown_s = cfg.alarm_trigger_period_s
        if now_s - self.last_alarm_s < cfg.alarm_auto_inhibit_period_s:
            return False
        self.last_alarm_s = now_s
        return True

    def matches(self, name: str) -> bool:
        """rrd_regex.search(name), remembered: data-source names repeat every step."""
        hit = self._matches.get(name)
        if hit is None:
            hit = self.config.regex.search(name) is not None
            if len(self._matches) < 4096:
                self._matches[name] = hit
        return hit


def consolidate(var: VariableState, sources: DataSources,
                fs_fraction: Callable[[], Optional[float]]) -> Optional[float]:
    """The variable's value this step, or None to skip the step (see the module docstring)."""
    fn = var.config.consolidation_fn
    if fn == "get_percent_fs_usage":
        return fs_fraction()  # perfmon ignores the matched values here
    matched = sorted(n for n in sources.names if var.matches(n))
    # perfmon's ObjectReport.get_value: a source without a value reads 0.0
    values = [sources.values.get(n, 0.0) for n in matched]
    if not values:
        # perfmon: sum([]) = 0; average([]) divides by zero and max([]) raises, so skip.
        return 0.0 if fn == "sum" else None
    if fn == "sum":
        return sum(values)
    if fn == "average":
        return sum(values) / float(len(values))
    return max(values)


@dataclasses.dataclass
class AlarmStats:
    """Counters of one (variable, priority) of an object; they outlive config resets."""

    alarms: int = 0
    inhibited: int = 0
    last_alarm_s: Optional[float] = None


class ObjectMonitor:
    """perfmon's ``ObjectMonitor``: one object's variables, reconciled against each new config."""

    def __init__(self, object_type: str, key: str, domain: str) -> None:
        self.object_type = object_type
        self.key = key
        self.domain = domain
        self.source: Optional[Tuple[str, str]] = None   # (origin, text) of the config last seen
        self.config: Optional[ObjectConfig] = None        # the config in force
        self.error: Optional[str] = None                  # why the config last seen was rejected
        self.variables: List[VariableState] = []
        self.stats: Dict[Tuple[str, str], AlarmStats] = {}

    def apply(self, config: ObjectConfig, now_s: float) -> None:
        """perfmon's ``__parse_xmlconfig``: a variable whose config is unchanged keeps its state, a
        changed one starts afresh, one no longer named is dropped."""
        names: List[str] = []
        for vc in config.sequence:
            fresh = VariableState(vc, now_s)
            if vc.name not in names:
                names.append(vc.name)
            append = True
            for count, old in enumerate([v for v in self.variables if v.config.name == vc.name]):
                if count > 0:
                    self.variables.remove(old)  # cannot happen after this method, as in perfmon
                elif old.config.identity != vc.identity:
                    self.variables.remove(old)
                else:
                    append = False
            if append:
                self.variables.append(fresh)
        self.variables = [v for v in self.variables if v.config.name in names]
        self.config = config

    def step(self, sources: DataSources, now_s: float, step_s: int,
             fs_fraction: Callable[[], Optional[float]]) -> List[AlarmEvent]:
        events: List[AlarmEvent] = []
        for var in self.variables:
            value = consolidate(var, sources, fs_fraction)
            if value is None:
                continue  # average / max over no source, or no fs reading: perfmon would crash
            outcome = var.update(value, now_s, step_s)
            if outcome is None:
                continue
            cfg = var.config
            stats = self.stats.setdefault((cfg.name, cfg.alarm_priority), AlarmStats())
            if outcome:
                stats.alarms += 1
                stats.last_alarm_s = now_s
            else:
                stats.inhibited += 1
            events.append(AlarmEvent(now_s, self.object_type, self.key, self.domain, cfg.name,
                                     cfg.alarm_priority, value, outcome))
        return events


@dataclasses.dataclass(frozen=True)
class RecentAlarm:
    """A sent alarm still within its retention period: one ``libvirt_perfmon_alarm_value`` series."""

    object_type: str
    uuid: str
    domain: str
    variable: str
    priority: str
    time_s: float      # the step's sample time (wall clock): the alarm's identity, with the rest
    value: float
    expires_s: float   # on the engine's clock (monotonic): never compared with anyone else's clock

    @property
    def alarm_time(self) -> str:
        """The ``alarm_time`` label: Unix seconds to the millisecond (steps are at least 1 s apart)."""
        return "%.3f" % self.time_s


class RecentAlarms:
    """The alarms sent in the last ``retention_s`` seconds, oldest first, at most ``per_variable`` per
    (object, variable, priority) and ``max_total`` in all; beyond a cap the oldest goes (counted)."""

    def __init__(self, retention_s: float, per_variable: int = ALARMS_PER_VARIABLE,
                 max_total: int = ALARMS_MAX) -> None:
        self.retention_s = retention_s
        self.per_variable = per_variable
        self.max_total = max_total
        self._alarms: "collections.deque[RecentAlarm]" = collections.deque()
        self.evicted_total = 0

    def add(self, event: AlarmEvent, now_s: float) -> None:
        self.expire(now_s)
        alarm = RecentAlarm(event.object_type, event.uuid, event.domain, event.variable, event.priority,
                            event.time_s, event.value, now_s + self.retention_s)
        key = (alarm.object_type, alarm.uuid, alarm.variable, alarm.priority)
        same = [a for a in self._alarms if (a.object_type, a.uuid, a.variable, a.priority) == key]
        if len(same) >= self.per_variable:
            self._evict(same[0])
        if len(self._alarms) >= self.max_total:
            self._evict(self._alarms[0])
        self._alarms.append(alarm)

    def _evict(self, alarm: RecentAlarm) -> None:
        self._alarms.remove(alarm)
        self.evicted_total += 1
        log.warning("perfmon alarm series of %s%s %s at %s dropped before its retention ended: more than %d "
                    "recent alarms of the variable or %d in all", alarm.object_type,
                    " " + alarm.domain if alarm.domain else "", alarm.variable, alarm.alarm_time,
                    self.per_variable, self.max_total)

    def expire(self, now_s: float) -> None:
        while self._alarms and self._alarms[0].expires_s <= now_s:
            self._alarms.popleft()

    def current(self, now_s: float) -> Tuple[RecentAlarm, ...]:
        self.expire(now_s)
        return tuple(self._alarms)


@dataclasses.dataclass(frozen=True)
class VariableRow:
    """What the collector exposes for one variable."""

    object_type: str
    uuid: str
    domain: str
    variable: str
    priority: str
    value: Optional[float]
    level: float
    countdown_s: float
    alarms_total: int
    inhibited_total: int
    last_alarm_s: Optional[float]


@dataclasses.dataclass(frozen=True)
class EngineSnapshot:
    rows: Tuple[VariableRow, ...]
    config_errors: int            # objects whose config last seen was rejected
    config_rejections_total: int  # rejected documents seen since start
    steps_total: int
    step_failures_total: int
    last_step_s: Optional[float]
    step_s: int
    recent_alarms: Tuple[RecentAlarm, ...] = ()
    alarm_series_evicted_total: int = 0


SampleSource = Callable[[], Union[Sample, Tuple[Optional[Sample], Sample]]]


class StopEvent(Protocol):
    """What the step timer sleeps on and is stopped by: a threading.Event, or a fake whose wait moves
    a fake clock (the timer is then tested without sleeping)."""

    def is_set(self) -> bool: ...

    def set(self) -> None: ...

    def clear(self) -> None: ...

    def wait(self, timeout: Optional[float] = None) -> bool: ...


class PerfmonEngine:
    """Runs perfmon's state machine over the host and every running domain, every ``step_s`` seconds.

    ``get_sample()`` goes through the shared single-flight sampler (a ``(previous, current)`` pair is
    accepted too); ``domain_info()`` maps UUID → cached DomainInfo whose ``perfmon_xml`` is the
    domain's metadata config or None. A domain without one uses ``file_config.vm``; the host uses
    ``file_config.host``. ``fs_fraction()`` returns the used share of the filesystem fs_usage watches
    (default: the one holding ``fs_path``). ``on_alarm`` is called with every AlarmEvent (sent or
    inhibited), from the engine's thread. Each sent alarm stays in the snapshot's ``recent_alarms`` for
    ``alarm_retention_s`` seconds of ``clock`` (see RecentAlarms), whatever happens to its object.
    The step timer reads ``clock`` and sleeps on ``stop_event`` (a new threading.Event by default).
    """

    def __init__(self, get_sample: SampleSource, domain_info: Callable[[], Mapping[str, Any]],
                 file_config: PerfmonFileConfig, step_s: int = 60, *, fs_path: str = "/",
                 fs_fraction: Optional[Callable[[], float]] = None,
                 on_alarm: Optional[Callable[[AlarmEvent], None]] = None,
                 clock: Callable[[], float] = time.monotonic,
                 alarm_retention_s: int = DEFAULT_ALARM_RETENTION_S,
                 stop_event: Optional[StopEvent] = None) -> None:
        if int(step_s) != step_s or not 1 <= step_s <= 3600:
            raise ValueError("perfmon step must be a whole number of seconds in 1..3600 (perfmon: 5 or 60)")
        if int(alarm_retention_s) != alarm_retention_s or not 1 <= alarm_retention_s <= 86400:
            raise ValueError("perfmon alarm retention must be a whole number of seconds in 1..86400")
        self._recent = RecentAlarms(int(alarm_retention_s))
        self._get_sample = get_sample
        self._domain_info = domain_info
        self._file_config = file_config
        self.step_s = int(step_s)
        if fs_fraction is None:
            from ..source.host import fs_used_fraction

            def fs_fraction() -> float:
                return fs_used_fraction(fs_path)
        self._fs_fraction_fn = fs_fraction
        self._on_alarm = on_alarm
        self._clock = clock
        self._lock = threading.Lock()
        self._host: Optional[ObjectMonitor] = None
        self._vms: Dict[str, ObjectMonitor] = {}
        self._previous: Optional[Sample] = None
        self._parse_cache: Dict[Tuple[str, str], Union[ObjectConfig, PerfmonConfigError]] = {}
        self._rejections = 0
        self._steps = 0
        self._failures = 0
        self._last_step_s: Optional[float] = None
        self._stop: StopEvent = stop_event if stop_event is not None else threading.Event()
        self._thread: Optional[threading.Thread] = None

    # --- configuration ------------------------------------------------------------------------------

    def _parse(self, object_type: str, text: str) -> Union[ObjectConfig, PerfmonConfigError]:
        key = (object_type, text)
        hit = self._parse_cache.get(key)
        if hit is None:
            try:
                hit = parse_object_config(text, object_type)
            except PerfmonConfigError as e:
                hit = e
            if len(self._parse_cache) >= 256:
                self._parse_cache.clear()
            self._parse_cache[key] = hit
        return hit

    def _refresh(self, monitor: ObjectMonitor, origin: str, text: str,
                 parsed: Optional[ObjectConfig], now_s: float) -> None:
        """perfmon's refresh_config: reparse only when the document changed; a rejected one leaves
        the config in force as it was."""
        source = (origin, text)
        if source == monitor.source:
            return
        monitor.source = source
        result: Union[ObjectConfig, PerfmonConfigError] = parsed if parsed is not None else self._parse(
            monitor.object_type, text)
        what = "host" if monitor.object_type == "host" else "domain %s" % monitor.domain
        if isinstance(result, PerfmonConfigError):
            monitor.error = str(result)
            self._rejections += 1
            log.warning("perfmon config of %s rejected, %s: %s", what,
                        "keeping the previous one" if monitor.config is not None else "not monitored", result)
            return
        monitor.error = None
        monitor.apply(result, now_s)
        log.info("perfmon config of %s loaded: %s", what,
                 ", ".join(v.config.name for v in monitor.variables) or "no variables")

    # --- one step -----------------------------------------------------------------------------------

    def step(self, sample: Sample) -> List[AlarmEvent]:
        """Advance every object by one step on ``sample``; returns the alarm attempts of this step."""
        with self._lock:
            events = self._step_locked(sample)
            now_s = self._clock()
            for event in events:
                if event.sent:
                    self._recent.add(event, now_s)
        for event in events:
            if event.sent:
                log.warning("perfmon alarm: %s%s variable %s priority %s value %f", event.object_type,
                            " " + event.domain if event.domain else "", event.variable, event.priority, event.value)
            if self._on_alarm is not None:
                self._on_alarm(event)
        return events

    def _step_locked(self, sample: Sample) -> List[AlarmEvent]:
        previous = self._previous
        if previous is not None and sample.monotonic_s <= previous.monotonic_s:
            return []  # the sampler handed out the sample of the last step again: nothing moved
        now_s = sample.wall_time_s
        interval_s = step_interval_s(previous, sample) if previous is not None else 0.0
        fs_cache: List[Optional[float]] = []

        def fs_fraction() -> Optional[float]:
            if not fs_cache:
                try:
                    fs_cache.append(float(self._fs_fraction_fn()))
                except (OSError, ValueError) as e:
                    log.warning("perfmon fs_usage: %s", e)
                    fs_cache.append(None)
            return fs_cache[0]

        events: List[AlarmEvent] = []
        fc = self._file_config

        if fc.host is None:
            self._host = None
        else:
            if self._host is None:
                self._host = ObjectMonitor("host", HOST_KEY, "")
            self._refresh(self._host, "file", fc.host_xml or "", fc.host, now_s)
            if previous is not None:  # the first step is a baseline, like an RRD's first reading
                events += self._host.step(host_datasources(previous, sample, interval_s), now_s, self.step_s,
                                          fs_fraction)

        if sample.up:
            infos = self._domain_info()
            seen = set()
            for uuid, dom in sample.domains.items():
                if not dom.active:
                    continue
                seen.add(uuid)
                info = infos.get(uuid)
                monitor = self._vms.get(uuid)
                if info is not None:
                    text = getattr(info, "perfmon_xml", None)
                    if monitor is None:
                        monitor = self._vms[uuid] = ObjectMonitor("vm", uuid, dom.name)
                    monitor.domain = dom.name
                    if text is not None:
                        self._refresh(monitor, "metadata", text, None, now_s)
                    elif fc.vm is not None:
                        self._refresh(monitor, "file", fc.vm_xml or "", fc.vm, now_s)
                    elif monitor.source is not None:
                        # perfmon: no config any more → no variables
                        monitor.source, monitor.error, monitor.config, monitor.variables = None, None, None, []
                if monitor is None or not dom.complete or uuid in sample.unresponsive:
                    continue  # no XML yet, or a stuck domain: keep the state, skip the step
                prev_dom = previous.domains.get(uuid) if previous is not None else None
                if prev_dom is None:
                    continue  # first sight of the domain (or of libvirt again): a baseline
                sources = vm_datasources(prev_dom, dom, interval_s)
                events += monitor.step(sources, now_s, self.step_s, fs_fraction)
            for uuid in list(self._vms):
                if uuid not in seen and uuid not in sample.unresponsive:
                    del self._vms[uuid]  # shut off or gone: perfmon drops the monitor
        # With libvirt down the VM monitors stay as they are; the host still steps on /proc.
        self._previous = sample
        self._steps += 1
        self._last_step_s = now_s
        return events

    # --- what the collector reads -------------------------------------------------------------------

    def snapshot(self) -> EngineSnapshot:
        with self._lock:
            rows: List[VariableRow] = []
            monitors = ([self._host] if self._host is not None else []) + list(self._vms.values())
            for mon in monitors:
                for var in mon.variables:
                    cfg = var.config
                    stats = mon.stats.get((cfg.name, cfg.alarm_priority)) or AlarmStats()
                    rows.append(VariableRow(mon.object_type, mon.key, mon.domain, cfg.name, cfg.alarm_priority,
                                            var.value, cfg.alarm_trigger_level, float(var.countdown_s),
                                            stats.alarms, stats.inhibited, stats.last_alarm_s))
            errors = sum(1 for m in monitors if m.error is not None)
            return EngineSnapshot(tuple(rows), errors, self._rejections, self._steps, self._failures,
                                  self._last_step_s, self.step_s, self._recent.current(self._clock()),
                                  self._recent.evicted_total)

    # --- the timer ----------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the step timer thread (first step at once, then every step_s)."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="perfmon", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> bool:
        """Stop the timer; whether its thread ended within ``timeout_s``."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout_s)
            return not thread.is_alive()
        return True

    def _run(self) -> None:
        next_s = self._clock()
        while not self._stop.is_set():
            try:
                got = self._get_sample()
                sample = got[1] if isinstance(got, tuple) else got
                if sample is not None:
                    self.step(sample)
            except Exception as e:  # a failed step must not end the timer
                with self._lock:
                    self._failures += 1
                log.warning("perfmon step failed: %s: %s", type(e).__name__, " ".join(str(e).split()))
            next_s += self.step_s
            now = self._clock()
            if next_s <= now:
                # Fell behind (slow sample): skip the missed ticks rather than run them back to back.
                next_s = now + self.step_s - ((now - next_s) % self.step_s)
            self._stop.wait(next_s - now)
