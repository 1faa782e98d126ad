"""Each sent alarm is its own ``libvirt_perfmon_alarm_value`` series for the retention period, on the
engine's own clock, whatever happens to its object; the number of such series is capped."""

from prometheus_client.parser import text_string_to_metric_families

from virt_exporter.perfmon.engine import ALARMS_MAX, ALARMS_PER_VARIABLE, AlarmEvent, PerfmonEngine, RecentAlarms

from .harness import DOMAIN, T0_S, Pair, config_xml, file_config
from .test_collector import render

ALWAYS_BAD = {"name": "cpu_usage", "alarm_trigger_level": "0.5", "alarm_trigger_period": "5",
              "alarm_auto_inhibit_period": "10", "alarm_priority": "4"}


class Clock:
    def __init__(self) -> None:
        self.now_s = 5000.0

    def __call__(self) -> float:
        return self.now_s


def pair_with_clock(step_s, retention_s, variables):
    """A Pair whose engine keeps alarms ``retention_s`` seconds on a clock the test moves."""
    pair = Pair(step_s, vm_xml=config_xml(variables))
    clock = Clock()
    pair.engine = PerfmonEngine(lambda: None, lambda: pair.info, file_config(), step_s, fs_fraction=lambda: 0.0,
                                clock=clock, alarm_retention_s=retention_s)
    return pair, clock


def alarm_series(engine):
    return {s.labels["alarm_time"]: (s.labels, s.value)
            for fam in text_string_to_metric_families(render(engine)) for s in fam.samples
            if s.name == "libvirt_perfmon_alarm_value"}


def evicted(engine):
    return [s.value for fam in text_string_to_metric_families(render(engine)) for s in fam.samples
            if s.name == "libvirt_perfmon_alarm_series_evicted_total"]


def test_each_sent_alarm_is_one_series_until_its_retention_ends():
    pair, clock = pair_with_clock(5, 30, [ALWAYS_BAD])
    for _ in range(4):  # alarm at +5, inhibited at +10, alarm at +15, inhibited at +20
        pair.step({"cpu0": 0.75})
        clock.now_s += 5
    sent = [e for e in pair.events if e.sent]
    assert [e.time_s - T0_S for e in sent] == [5, 15]
    got = alarm_series(pair.engine)
    assert sorted(got) == ["%.3f" % (T0_S + 5), "%.3f" % (T0_S + 15)]
    labels, value = got["%.3f" % (T0_S + 5)]
    assert (labels["object"], labels["domain"], labels["variable"], labels["priority"], value) == (
        "vm", DOMAIN, "cpu_usage", "4", 0.75)
    # The first alarm was added at clock 5000 (its step), the second at 5010; retention 30 s.
    clock.now_s = 5029.9
    assert len(alarm_series(pair.engine)) == 2
    clock.now_s = 5030.0
    assert sorted(alarm_series(pair.engine)) == ["%.3f" % (T0_S + 15)]
    clock.now_s = 5040.0
    assert alarm_series(pair.engine) == {}
    assert evicted(pair.engine) == [0]


def test_alarm_series_outlive_the_variable_and_the_monitor():
    pair, clock = pair_with_clock(5, 60, [ALWAYS_BAD])
    pair.step({"cpu0": 0.75})
    pair.set_vm_xml(None)  # metadata removed: the monitor loses its variables at the next step
    pair.step({"cpu0": 0.75})
    assert not [r for r in pair.engine.snapshot().rows if r.domain == DOMAIN]
    assert list(alarm_series(pair.engine)) == ["%.3f" % (T0_S + 5)]
    clock.now_s += 60
    assert alarm_series(pair.engine) == {}


def test_at_most_so_many_series_per_variable_the_oldest_go_first():
    every_step = dict(ALWAYS_BAD, alarm_auto_inhibit_period="0")
    pair, clock = pair_with_clock(5, 3600, [every_step])
    n = ALARMS_PER_VARIABLE + 5
    for _ in range(n):
        pair.step({"cpu0": 0.75})
        clock.now_s += 5
    assert sum(e.sent for e in pair.events) == n
    got = alarm_series(pair.engine)
    assert sorted(got) == ["%.3f" % (T0_S + 5 * k) for k in range(n - ALARMS_PER_VARIABLE + 1, n + 1)]
    assert evicted(pair.engine) == [5]


def test_at_most_so_many_series_in_all():
    recent = RecentAlarms(3600)
    per = 3
    variables = ALARMS_MAX // per + 40
    for k in range(per):
        for v in range(variables):
            recent.add(AlarmEvent(T0_S + k, "vm", "uuid-%d" % v, "dom-%d" % v, "cpu_usage", "5", 1.0, True),
                       now_s=float(k))
    kept = recent.current(0.0)
    assert len(kept) == ALARMS_MAX
    assert recent.evicted_total == per * variables - ALARMS_MAX
    # The oldest went: every alarm of the last round is still there.
    assert sum(1 for a in kept if a.time_s == T0_S + per - 1) == variables
