"""The perfmon engine's state (``--perfmon.config``): values, levels, countdowns, alarms.

The engine steps on its own timer; this collector only reads its snapshot (``ctx.perfmon``)
and yields nothing when perfmon is not configured. ``domain`` is empty on host series.
"""

from __future__ import annotations

from typing import Iterable

from prometheus_client.metrics_core import Metric

from ..perfmon.engine import ALARMS_MAX, ALARMS_PER_VARIABLE
from .base import ScrapeContext, register
from .families import counter, gauge

VAR_LABELS = ["object", "domain", "variable"]


# The groups the engine's VM data sources need from the shared sampler (cpuN, vif, vbd, memory).
@register("perfmon", stats_groups=("vcpu", "interface", "block", "balloon"),
          # The engine's state does not depend on this scrape's sample: dropping it while libvirt is
          # down would make Prometheus mark its series stale.
          without_libvirt=True,
          help="perfmon engine: consolidated values, levels, countdowns and alarms (needs --perfmon.config)")
def collect(ctx: ScrapeContext) -> Iterable[Metric]:
    snap = ctx.perfmon
    if snap is None:
        return
    value = gauge("libvirt_perfmon_value", "Last consolidated value of a perfmon variable (its unit is the data "
                  "sources', e.g. a CPU share or bytes/s), one per step.", VAR_LABELS)
    level = gauge("libvirt_perfmon_trigger_level", "alarm_trigger_level of the variable.", VAR_LABELS)
    countdown = gauge("libvirt_perfmon_trigger_countdown_seconds", "perfmon's trigger_down_counter: seconds of bad "
                      "values still needed before the next alarm attempt.", VAR_LABELS)
    alarms = counter("libvirt_perfmon_alarms_total", "Alarms sent by the perfmon engine.",
                     VAR_LABELS + ["priority"])
    inhibited = counter("libvirt_perfmon_alarms_inhibited_total",
                        "Alarm attempts dropped by alarm_auto_inhibit_period.", VAR_LABELS + ["priority"])
    last = gauge("libvirt_perfmon_last_alarm_timestamp_seconds", "Time of the variable's last sent alarm (the "
                 "step's sample time, Unix seconds); absent before the first.", VAR_LABELS + ["priority"])
    # One series per sent alarm, for --perfmon.alarm-retention seconds: PerfmonAlarm fires on it.
    recent = gauge("libvirt_perfmon_alarm_value", "The value that raised a sent alarm, one series per alarm "
                   "(alarm_time: the step's time, Unix seconds) for --perfmon.alarm-retention seconds after it. "
                   "PerfmonAlarm fires on it.", VAR_LABELS + ["priority", "alarm_time"])
    evicted = counter("libvirt_perfmon_alarm_series_evicted_total", "Alarm series dropped before their retention "
                      "ended, to keep at most %d per variable and %d in all." % (ALARMS_PER_VARIABLE, ALARMS_MAX), [])
    for row in snap.rows:
        if row.domain and not ctx.keeps_domain(row.domain):
            continue
        labels = [row.object_type, row.domain, row.variable]
        prio = labels + [str(row.priority)]
        if row.value is not None:
            value.add_metric(labels, row.value)
        level.add_metric(labels, row.level)
        countdown.add_metric(labels, row.countdown_s)
        alarms.add_metric(prio, row.alarms_total)
        inhibited.add_metric(prio, row.inhibited_total)
        if row.last_alarm_s is not None:
            last.add_metric(prio, row.last_alarm_s)
    for alarm in snap.recent_alarms:
        if alarm.domain and not ctx.keeps_domain(alarm.domain):
            continue
        recent.add_metric([alarm.object_type, alarm.domain, alarm.variable, alarm.priority, alarm.alarm_time],
                          alarm.value)
    evicted.add_metric([], snap.alarm_series_evicted_total)
    errors = gauge("libvirt_perfmon_config_errors", "Objects (host, domains) whose perfmon XML was rejected; the "
                   "last valid config stays in force.", [])
    errors.add_metric([], snap.config_errors)
    rejections = counter("libvirt_perfmon_config_rejections_total", "Perfmon XML documents rejected since start.", [])
    rejections.add_metric([], snap.config_rejections_total)
    steps = counter("libvirt_perfmon_steps_total", "Steps the perfmon engine has run.", [])
    steps.add_metric([], snap.steps_total)
    failures = counter("libvirt_perfmon_step_failures_total", "Steps that failed (no sample); state kept.", [])
    failures.add_metric([], snap.step_failures_total)
    step = gauge("libvirt_perfmon_step_seconds", "The engine's step (perfmon's rrd_step).", [])
    step.add_metric([], snap.step_s)
    yield from (value, level, countdown, alarms, inhibited, last, recent, evicted, errors, rejections, steps,
                failures, step)
