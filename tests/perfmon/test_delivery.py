"""Each alarm the perfmon engine sends is one Alertmanager notification, end to end, with an HA pair of
real Prometheus replicas per scrape interval, each pair alerting one real Alertmanager (the shipped
alertmanager.yml, webhook URL replaced) whose webhook counts notifications.

One exporter, one scenario, two stacks watching it at once (to keep the run short): a pair scraping and
evaluating every 15 s, and a pair doing so every 60 s. The replicas of a pair are configured as HA
pairs usually are (an external ``replica`` label, dropped from the alerts they send) and scrape through
a proxy on loopback that fails one scrape carrying alarm series for each replica: replica a its first
such scrape (it sees those alarms one interval late), replica b its second (its alerts resolve and
return mid-life). The alarms, deterministic and few:

- the host config (file): two variables that are always bad (host memory above 0 KiB; free memory
  below 10^18 KiB) with a one-hour auto-inhibit period: exactly one alarm each, priorities 2 and 5;
- a guest's metadata config: its ``memory`` data source above 0 bytes, step 5 s, period 5 s, inhibit
  8 s: an alarm every other step (10 s) for as long as the metadata is set (about 25 s), then removed:
  several alarms of one variable, each a new notification.

``--perfmon.alarm-retention`` is 195 s: more than three 60 s scrapes, as one failed scrape at 60 s
needs (the default, 240 s, would add 45 s to the run). The scenario ends when the exporter exposes no alarm
series, no replica has the alert active and no Alertmanager has it unresolved (then no notification
can follow: one needs a firing alert), plus group_wait and a little for a flush in flight.
Then, per interval: notifications = ``libvirt_perfmon_alarms_total``, one alert each, and their
identities are exactly the alarm series the replicas scraped.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Dict, List

import pytest
import yaml

import testbed as tb  # tests/ is on sys.path (tests/conftest.py)
from bounds import wait_for
from exporterproc import ExporterProcess

from . import promstack

pytestmark = [pytest.mark.libvirt, pytest.mark.prometheus]

NS = "urn:virt-exporter:perfmon:1"
INTERVALS_S = (15, 60)
STEP_S = 5
RETENTION_S = 195
VM_ALARMS_FOR_S = 25            # the guest's metadata config stays this long after its first alarm
FAIL_NTH = {"a": 1, "b": 2}     # replica → which of its scrapes carrying alarm series fails
ALERT = "PerfmonAlarm"
HOST_CONFIG = (
    '<perfmon><host><config>'
    '<variable><name value="total_memory"/><rrd_regex value="^memory_total_kib$"/><consolidation_fn value="sum"/>'
    '<alarm_trigger_level value="0"/><alarm_trigger_period value="5"/><alarm_auto_inhibit_period value="3600"/>'
    '<alarm_priority value="2"/></variable>'
    '<variable><name value="free_memory"/><rrd_regex value="^memory_free_kib$"/><consolidation_fn value="sum"/>'
    '<alarm_trigger_level value="1e18"/><alarm_trigger_sense value="low"/><alarm_trigger_period value="5"/>'
    '<alarm_auto_inhibit_period value="3600"/><alarm_priority value="5"/></variable>'
    '</config></host></perfmon>')
VM_CONFIG = ('<config><variable><name value="memory"/><rrd_regex value="^memory$"/><consolidation_fn value="sum"/>'
             '<alarm_trigger_level value="0"/><alarm_trigger_period value="5"/>'
             '<alarm_auto_inhibit_period value="8"/><alarm_priority value="4"/></variable></config>')
FIRED = 'ALERTS{alertname="%s", alertstate="firing"}[15m]' % ALERT  # what each replica fired
UP_MIN = 'min_over_time(up{job="virt-exporter"}[15m])'  # 0: the replica saw a scrape fail
SEVERITY = {"2": "critical", "4": "warning", "5": "info"}
# Start to end: stacks ~10 s, first VM alarm ~15 s, alarms for 25 s, the last one exposed 195 s, seen
# gone by a 60 s replica up to two intervals later, group_wait: ~6 min; bounded with room for load.
SCENARIO_BOUND_S = 480


@dataclasses.dataclass
class Stack:
    interval_s: int
    webhook: promstack.WebhookReceiver
    am: Any = None
    replicas: Dict[str, Any] = dataclasses.field(default_factory=dict)
    proxy: Any = None

    def notifications(self) -> List[promstack.Notification]:
        return [n for n in self.webhook.received()
                if any(a["labels"].get("alertname") == ALERT for a in n.alerts)]

    def quiet(self) -> bool:
        return not any(promstack.active_alerts(p, ALERT) for p in self.replicas.values()) \
            and not promstack.alertmanager_active(self.am, ALERT)


def alarm_totals(samples, domain: str) -> Dict[tuple, float]:
    """libvirt_perfmon_alarms_total of the host and of ``domain``, by (object, domain, variable)."""
    return {(lbl["object"], lbl["domain"], lbl["variable"]): v
            for lbl, v in samples.series("libvirt_perfmon_alarms_total")
            if lbl["object"] == "host" or lbl["domain"] == domain}


def diagnostics(stacks: List[Stack], exporter) -> str:
    report = promstack.Diagnostics()
    part = report.part
    if exporter is not None:
        part("exporter: perfmon alarms", lambda: "\n".join(
            line for line in exporter.scrape_text().splitlines() if line.startswith("libvirt_perfmon_alarm")))
    for st in stacks:
        for name, prom in st.replicas.items():
            part("%ds replica %s: ALERTS" % (st.interval_s, name), lambda prom=prom: [
                (r["metric"].get("alarm_time"), r["metric"].get("alertstate"), [t for t, _v in r["values"]])
                for r in promstack.query(prom, 'ALERTS{alertname="%s"}[10m]' % ALERT)])
            part("%ds replica %s: up" % (st.interval_s, name), lambda prom=prom: [
                r["values"] for r in promstack.query(prom, 'up{job="virt-exporter"}[10m]')])
            part("%ds replica %s: scrapes" % (st.interval_s, name), lambda st=st, name=name: [
                (round(s.received_s, 1), sorted(a[3] for a in s.alarms), s.failed) for s in st.proxy.of(name)])
        if st.am is not None:
            part("%ds alertmanager log" % st.interval_s, lambda st=st: "\n".join(
                line for line in st.am.log_tail(40000).splitlines() if "level=debug" not in line
                or "Notify" in line or "flush" in line.lower())[-4000:])
        part("%ds webhook" % st.interval_s, lambda st=st: [
            (round(n.received_s, 1), [a["labels"].get("alarm_time") for a in n.alerts])
            for n in st.webhook.received()])
    return str(report)


class AlarmCounts:
    """The engine's own count of sent alarms, by (object, domain, variable): the highest
    libvirt_perfmon_alarms_total seen. Polled, because a variable's series go when its config does."""

    def __init__(self, exporter, domain: str) -> None:
        self.exporter = exporter
        self.domain = domain
        self.totals: Dict[tuple, float] = {}

    def poll(self):
        samples = self.exporter.scrape()
        for key, v in alarm_totals(samples, self.domain).items():
            self.totals[key] = max(self.totals.get(key, 0.0), v)
        return samples

    def poll_for(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.poll()
            time.sleep(1)


@pytest.fixture(scope="module")
def delivery(libvirtd, tmp_path_factory) -> Dict[int, Dict[str, Any]]:
    """Runs the scenario once; per interval, what the test functions check."""
    tmp = tmp_path_factory.mktemp("delivery")
    t_start = time.monotonic()
    bed = tb.Testbed()
    perfmon_file = tmp / "perfmon.xml"
    perfmon_file.write_text(HOST_CONFIG)
    started: List[Any] = []
    stacks: List[Stack] = []
    exporter = None
    try:
        guest = bed.make_guest("idle", vcpus=1, interface=False)
        for interval_s in INTERVALS_S:
            stacks.append(Stack(interval_s, promstack.WebhookReceiver().__enter__()))
        exporter = ExporterProcess(["--perfmon.config", str(perfmon_file), "--perfmon.step", str(STEP_S),
                                    "--perfmon.alarm-retention", str(RETENTION_S),
                                    "--libvirt.domain-include", "^%s$" % guest.name])
        exporter.start()
        counts = AlarmCounts(exporter, guest.name)
        for st in stacks:
            st.proxy = promstack.ScrapeProxy(exporter.url, FAIL_NTH).__enter__()
            st.am = promstack.start_alertmanager(tmp / ("am-%d" % st.interval_s), st.webhook.url)
            started.append(st.am)
            for name in FAIL_NTH:
                prom = promstack.start_prometheus(tmp / ("prom-%d-%s" % (st.interval_s, name)), st.proxy.address,
                                                  promstack.address(st.am), st.interval_s, replica=name)
                started.append(prom)
                st.replicas[name] = prom

        tb.virsh("metadata", guest.name, "--uri", NS, "--key", "perfmon", "--set", VM_CONFIG, "--live")
        m0 = time.monotonic()
        wait_for(lambda: counts.poll() and counts.totals.get(("vm", guest.name, "memory")), 60,
                 "the guest's first alarm", interval_s=1)
        counts.poll_for(VM_ALARMS_FOR_S)
        tb.virsh("metadata", guest.name, "--uri", NS, "--remove", "--live")
        # The engine applies the removal at its next step: then the guest's variable is gone.
        wait_for(lambda: not counts.poll().series("libvirt_perfmon_value", domain=guest.name), 30,
                 "the guest's perfmon variable to go", interval_s=1)
        alarms_stopped_s = time.monotonic() - m0

        def no_alarm_series():
            return not counts.poll().series("libvirt_perfmon_alarm_value")
        wait_for(no_alarm_series, SCENARIO_BOUND_S - (time.monotonic() - m0),
                 "the exporter to drop the alarm series after their retention", interval_s=1)
        for st in stacks:
            wait_for(st.quiet, SCENARIO_BOUND_S - (time.monotonic() - m0),
                     "the %d s replicas and their Alertmanager to resolve every alert" % st.interval_s, interval_s=1)
        time.sleep(group_wait_s() + 5)  # a flush that took an alert while it was firing has posted by now
        scenario_s = time.monotonic() - m0
        final = counts.poll()
        logged = sum(1 for line in exporter.log().splitlines()
                     if "perfmon alarm: " in line and ("alarm: host " in line or guest.name in line))
        diag = diagnostics(stacks, exporter)
        results = {}
        for st in stacks:
            results[st.interval_s] = dict(
                notifications=st.notifications(), scrapes={name: st.proxy.of(name) for name in st.replicas},
                up_min={name: [float(r["value"][1]) for r in promstack.query(prom, UP_MIN)]
                        for name, prom in st.replicas.items()},
                still_active=[a for p in st.replicas.values() for a in promstack.active_alerts(p, ALERT)],
                fired={name: {identity(r["metric"]) for r in promstack.query(prom, FIRED)}
                       for name, prom in st.replicas.items()},
                totals=dict(counts.totals), logged=logged, domain=guest.name, scenario_s=scenario_s,
                alarms_stopped_s=alarms_stopped_s, evicted=final.get("libvirt_perfmon_alarm_series_evicted_total"),
                test_s=time.monotonic() - t_start, diagnostics=diag)
        print("perfmon delivery: scenario %.0f s, alarms %s" % (scenario_s, counts.totals))
        return results
    except BaseException:
        print(diagnostics(stacks, exporter))
        raise
    finally:
        for p in reversed(started):
            p.stop()
        for st in stacks:
            if st.proxy is not None:
                st.proxy.__exit__()
            st.webhook.__exit__()
        if exporter is not None:
            exporter.stop()
            if exporter.log_path is not None:
                exporter.log_path.unlink(missing_ok=True)
        bed.cleanup()


def group_wait_s() -> int:
    route = [r for r in yaml.safe_load(promstack.ALERTMANAGER_CONFIG.read_text())["route"]["routes"]
             if r.get("receiver") == "perfmon"][0]
    return int(route["group_wait"].rstrip("s"))


def identity(labels: Dict[str, str]) -> tuple:
    """An alert's alarm: (object, domain, variable, alarm_time); Prometheus drops the host's empty domain."""
    return labels["object"], labels.get("domain", ""), labels["variable"], labels["alarm_time"]


@pytest.mark.parametrize("interval_s", INTERVALS_S)
def test_ha_pair_notifies_each_alarm_exactly_once(delivery, interval_s):
    r = delivery[interval_s]
    totals, notifications, detail = r["totals"], r["notifications"], r["diagnostics"]
    alarms = int(sum(totals.values()))
    identities = [identity(a["labels"]) for n in notifications for a in n.alerts]
    print("%d s: %d notifications for %d alarms %s; scenario %.0f s, test %.0f s"
          % (interval_s, len(notifications), alarms, totals, r["scenario_s"], r["test_s"]))
    # The alarms the configs make, from perfmon's semantics (not from the exporter's code): one per
    # host variable in the hour of inhibit, an alarm every other step of the guest while configured.
    assert totals[("host", "", "total_memory")] == 1 and totals[("host", "", "free_memory")] == 1, totals
    assert totals[("vm", r["domain"], "memory")] >= 2, totals
    assert r["logged"] == alarms, (r["logged"], totals)  # the engine's log line per sent alarm agrees
    assert r["evicted"] == 0
    # Each replica failed exactly one scrape, one that carried alarm series, and Prometheus saw it fail.
    for name, scrapes in r["scrapes"].items():
        failed = [s for s in scrapes if s.failed]
        assert len(failed) == 1 and failed[0].alarms, "replica %s\n%s" % (name, detail)
        assert r["up_min"][name] == [0.0], "replica %s: %s\n%s" % (name, r["up_min"], detail)
    # Every alarm series either replica scraped: one notification each, one alert in it, nothing else.
    scraped = {a for scrapes in r["scrapes"].values() for s in scrapes if not s.failed for a in s.alarms}
    assert [len(n.alerts) for n in notifications] == [1] * len(notifications), detail
    assert sorted(identities) == sorted(scraped), detail
    # Each replica on its own saw and fired every alarm, its failed scrape notwithstanding: the pair
    # is not what saves an alarm.
    for name, scrapes in r["scrapes"].items():
        assert {a for s in scrapes if not s.failed for a in s.alarms} == scraped, "replica %s\n%s" % (name, detail)
        assert r["fired"][name] == scraped, "replica %s fired %s\n%s" % (name, sorted(r["fired"][name]), detail)
    assert len(notifications) == alarms, detail
    assert len(set(identities)) == alarms, detail
    for n in notifications:
        labels = n.alerts[0]["labels"]
        assert labels["severity"] == SEVERITY[labels["priority"]], labels
        assert "replica" not in labels, labels
    assert not r["still_active"]
