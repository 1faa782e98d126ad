"""Issue 7, end to end on the test bed: a CPU-burning guest with a per-VM perfmon config in its
metadata (cpu_usage level 0.5, period 10 s, inhibit 60 s; engine step 5 s), the real exporter, a real
Prometheus evaluating the shipped PerfmonAlarm, and a real Alertmanager with the shipped example config
notifying a webhook in this process: one notification for the first alarm, none for the attempts the
auto-inhibit drops, and a second one for the first alarm after the inhibit period.

This is the 5 s end of the scrape intervals PerfmonAlarm supports (one Prometheus; test_delivery.py has
HA pairs at 15 and 60 s). The inhibit window is the engine's (perfmon's): 60 s from the first sent
alarm, whose time every notification carries (label ``alarm_time``). Receive times lag their alarms by scrape,
evaluation and group_wait phases that differ a little from one alarm to the next, so the window is
checked on alarm times and the receive times are checked against it: nothing arrives between the first
notification and the end of the window, and the second notification is for an alarm at least 60 s after
the first.

The level: the issue's 0.5 when the loaded host gives the 1-vCPU guest enough of a core in every step
(measured from ``virsh domstats`` before the config is set); otherwise a quarter of the measured share,
with a warning that names the figures — the rest of the chain does not depend on the level.
"""

import datetime
import math
import re
import time
import warnings
from pathlib import Path

import pytest

import testbed as tb  # tests/ is on sys.path (tests/conftest.py)
from bounds import wait_for
from exporterproc import ExporterProcess

from . import promstack

pytestmark = [pytest.mark.libvirt, pytest.mark.prometheus]

NS = "urn:virt-exporter:perfmon:1"
ISSUE_LEVEL = 0.5
PERIOD_S = 10
INHIBIT_S = 60
STEP_S = 5
MEASURE_STEPS = 2
# From setting the metadata to the end: first alarm ~2 steps, its notification ≤ ~20 s later, the
# second alarm at +60 s (+10 s if the attempt at +60 s falls a hair short of it), its notification,
# and a grace of one group_wait (10 s) for a duplicate.
E2E_BOUND_S = 150
GRACE_S = 12


def vcpu_time_ns(guest) -> int:
    return int(guest.domstats("vcpu")["vcpu.0.time"])


def measure_cpu_fractions(guest, steps: int = MEASURE_STEPS, step_s: float = STEP_S) -> list:
    """Share of one host CPU the guest's vCPU 0 got in each of ``steps`` engine-sized steps — what the
    engine's cpu0 (and, with one vCPU, cpu_usage) is."""
    readings = [(time.monotonic(), vcpu_time_ns(guest))]
    for _ in range(steps):
        time.sleep(step_s)
        readings.append((time.monotonic(), vcpu_time_ns(guest)))
    return [(c1 - c0) / 1e9 / (t1 - t0) for (t0, c0), (t1, c1) in zip(readings, readings[1:])]


def choose_level(fractions: list) -> float:
    """The issue's 0.5 when every measured step gave the guest comfortably more than that of a CPU.
    On a host too loaded for that, a quarter of the mean share, said loudly: per-step values swing to a
    quarter or a third of their mean there (other engineers' guests), and each dip below the level
    restarts the 10 s countdown; the rest of the chain does not depend on the level."""
    mean = sum(fractions) / len(fractions)
    if min(fractions) >= ISSUE_LEVEL * 1.5:
        return ISSUE_LEVEL
    level = math.floor(mean / 4 * 100) / 100
    if level < 0.03:  # an idle guest's vCPU uses about 0.01
        pytest.fail("the busy guest got only %.3f of a CPU: the host is too loaded for this test" % mean)
    warnings.warn("loaded host: the 1-vCPU busy guest got %s of a CPU per %d s step (not all >= %.2f), so "
                  "cpu_usage level %.2f is used instead of the issue's %.1f"
                  % ("/".join("%.2f" % f for f in fractions), STEP_S, ISSUE_LEVEL * 1.5, level, ISSUE_LEVEL),
                  stacklevel=2)
    return level


def perfmon_config(level: float) -> str:
    return ('<config><variable><name value="cpu_usage"/><alarm_trigger_level value="%s"/>'
            '<alarm_trigger_period value="%d"/><alarm_auto_inhibit_period value="%d"/></variable></config>'
            % (repr(level), PERIOD_S, INHIBIT_S))


def ours(notification, domain):
    """The PerfmonAlarm alerts of ``domain``'s cpu_usage in a notification."""
    return [a for a in notification.alerts
            if a["labels"].get("alertname") == "PerfmonAlarm" and a["labels"].get("domain") == domain
            and a["labels"].get("variable") == "cpu_usage"]


def starts_at_s(alert) -> float:
    """An alert's startsAt (Prometheus' activeAt: the evaluation that first found it) as Unix seconds."""
    text = re.sub(r"(\.\d{6})\d*", r"\1", alert["startsAt"]).replace("Z", "+00:00")
    return datetime.datetime.fromisoformat(text).timestamp()


def diagnostics(domain, exporter, prom, am, webhook) -> str:
    """What each stage saw, for a failure message: engine, Prometheus, Alertmanager, webhook."""
    report = promstack.Diagnostics()
    part = report.part

    if exporter is not None:
        part("exporter: perfmon series", lambda: "\n".join(
            line for line in exporter.scrape_text().splitlines() if line.startswith("libvirt_perfmon")))
        part("exporter: perfmon log", lambda: "\n".join(
            line for line in exporter.log().splitlines() if "perfmon" in line)[-3000:])
    if prom is not None:
        for expr in ('ALERTS{alertname="PerfmonAlarm"}[3m]', 'libvirt_perfmon_alarm_value[3m]',
                     'libvirt_perfmon_value{domain="%s"}[3m]' % domain, 'up{job="virt-exporter"}[3m]',
                     'scrape_duration_seconds{job="virt-exporter"}[3m]'):
            part("prometheus: " + expr, lambda expr=expr: [
                (r["metric"].get("__name__", ""), r["metric"].get("alertstate", ""), r["values"])
                for r in promstack.query(prom, expr)])
        part("prometheus log", lambda: prom.log_tail(2000))
    if am is not None:
        part("alertmanager: alerts", lambda: promstack.http_get(promstack.base_url(am) + "/api/v2/alerts"))
        part("alertmanager log", lambda: "\n".join(
            line for line in am.log_tail(20000).splitlines() if "level=debug" not in line or "Notify" in line)[-3000:])
    if webhook is not None:
        part("webhook", lambda: [(round(n.received_s, 1), n.payload.get("status"), n.payload.get("groupLabels"))
                                 for n in webhook.received()])
    return str(report)


def test_busy_guest_alarm_notified_once_per_inhibit_period(testbed, tmp_path: Path):
    t_test = time.monotonic()
    guest = testbed.make_guest("busy", vcpus=1, interface=False)
    perfmon_file = tmp_path / "perfmon.xml"
    perfmon_file.write_text("<perfmon/>\n")  # only domains with a metadata config are monitored

    started = []
    exporter = prom = am = webhook = None
    report = {}
    try:
        with promstack.WebhookReceiver() as webhook:
            # The stack comes up while the guest's firmware runs.
            am = promstack.start_alertmanager(tmp_path / "am", webhook.url)
            started.append(am)
            exporter = ExporterProcess(["--perfmon.config", str(perfmon_file), "--perfmon.step", str(STEP_S)])
            exporter.start()
            prom = promstack.start_prometheus(tmp_path / "prom", "127.0.0.1:%d" % exporter.port,
                                              am.ready_url.split("//")[1].split("/")[0])
            started.append(prom)

            boot_s = guest.wait_booted(timeout=120)
            fractions = measure_cpu_fractions(guest)
            level = choose_level(fractions)
            report.update(cpu_fraction_per_step=[round(f, 3) for f in fractions], level=level)
            print("guest %s: %s of a CPU per step; level %s" % (guest.name, report["cpu_fraction_per_step"], level))

            wait_for(lambda: promstack.query(prom, 'up{job="virt-exporter"} == 1'), 30,
                     "Prometheus to scrape the exporter")
            wait_for(lambda: promstack.http_get(promstack.base_url(prom) + "/api/v1/alertmanagers")
                     ["data"]["activeAlertmanagers"], 30, "Prometheus to find the Alertmanager")
            assert not exporter.scrape().series("libvirt_perfmon_trigger_level", domain=guest.name), \
                "monitored before it has a config"

            # The per-VM config, through the metadata path (a metadata-change event to the exporter).
            tb.virsh("metadata", guest.name, "--uri", NS, "--key", "perfmon", "--set", perfmon_config(level),
                     "--live", "--config")
            t0 = time.time()
            m0 = time.monotonic()

            def levels():
                return exporter.scrape().series("libvirt_perfmon_trigger_level", domain=guest.name)
            got = wait_for(levels, 30, "the exporter to load the metadata config")
            assert [v for _l, v in got] == [level]

            def notified():
                return [n for n in webhook.received() if ours(n, guest.name)]

            first = wait_for(notified, 60, "the first notification")[0]
            a1 = float(ours(first, guest.name)[0]["labels"]["alarm_time"])
            # Through the first inhibit window (on the engine's clock) nothing else may arrive.
            window_end = a1 + INHIBIT_S
            while time.time() < window_end:
                time.sleep(0.5)
            in_window = notified()
            samples = exporter.scrape()
            inhibited = samples.series("libvirt_perfmon_alarms_inhibited_total", domain=guest.name)

            remaining_s = E2E_BOUND_S - GRACE_S - (time.monotonic() - m0)
            later = wait_for(lambda: [n for n in notified() if n.received_s >= window_end], remaining_s,
                             "the notification after the inhibit period")
            second = later[0]
            time.sleep(GRACE_S)  # one group_wait and a bit: a duplicate of the second would show now
            everything = notified()
            samples_end = exporter.scrape()
            values = promstack.query(prom, 'libvirt_perfmon_value{domain="%s"}[%ds]' % (guest.name, E2E_BOUND_S))
            e2e_s = time.monotonic() - m0
    except BaseException:
        print(report)
        print(diagnostics(guest.name, exporter, prom, am, webhook))
        raise
    finally:
        for p in reversed(started):
            p.stop()
        if exporter is not None:
            exporter.stop()
            exporter_log = exporter.log()
            if exporter.log_path is not None:
                exporter.log_path.unlink(missing_ok=True)

    a2 = float(ours(second, guest.name)[0]["labels"]["alarm_time"])
    rel = [round(n.received_s - a1, 1) for n in everything]
    per_step = [float(v) for _t, v in values[0]["values"]] if values else []
    fired = [round(starts_at_s(ours(n, guest.name)[0]) - a, 1) for n, a in ((first, a1), (second, a2))]
    report.update(boot_s=round(boot_s, 1), metadata_set_to_first_alarm_s=round(a1 - t0, 1),
                  alarm_to_firing_s=fired, notifications_rel_first_alarm_s=rel, second_alarm_rel_s=round(a2 - a1, 1),
                  e2e_s=round(e2e_s, 1), test_s=round(time.monotonic() - t_test, 1),
                  value_range=(round(min(per_step, default=math.nan), 3), round(max(per_step, default=math.nan), 3)))
    print("perfmon e2e:", report)
    detail = "%s\n--- exporter log tail ---\n%s" % (report, exporter_log[-3000:])

    # Exactly one notification for the alarms of the first inhibit window ...
    assert in_window == [first], detail
    assert len(ours(first, guest.name)) == 1, detail
    assert first.received_s >= a1 >= t0 - 1, detail
    labels = ours(first, guest.name)[0]["labels"]
    assert (labels["object"], labels["priority"], labels["severity"]) == ("vm", "5", "info"), labels
    # ... although the engine did attempt (and drop) alarms inside it: the inhibit is what kept it to one.
    assert sum(v for _l, v in inhibited) >= 1, (inhibited, detail)
    # A second one after it, for an alarm at least one inhibit period after the first, and no duplicate.
    assert a2 >= a1 + INHIBIT_S - 0.001, detail  # alarm_time is to the millisecond
    assert second.received_s >= window_end, detail
    assert everything == [first, second], detail
    alarms = samples_end.series("libvirt_perfmon_alarms_total", domain=guest.name)
    assert [v for _l, v in alarms] == [2.0], (alarms, detail)
    assert e2e_s <= E2E_BOUND_S, detail
