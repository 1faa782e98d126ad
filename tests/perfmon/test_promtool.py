"""promtool ``test rules`` cases generated from the seed model:

- ``PerfmonAlarm`` (alerts/optional/perfmon.rules.yml) over the engine's per-alarm series fires for each model
  alarm, labelled with its identity, while its series is exposed and never otherwise, checked at every
  evaluation, at 5, 15 and 60 s intervals;
- the native rules of ``perfmon-rules`` over raw counters fire exactly while the model is in a bad
  spell that has reached an alarm attempt — i.e. their onsets are the model's first attempt of each
  spell, which is where perfmon.md says native rules can match (re-arming and inhibit are Alertmanager's).
"""

import random
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from virt_exporter.mixin.config import MixinConfig
from virt_exporter.perfmon.config import parse_object_config
from virt_exporter.perfmon.engine import DEFAULT_ALARM_RETENTION_S
from virt_exporter.perfmon.rules import native_rules

from .harness import T0_S, SeedVM, config_xml

pytestmark = pytest.mark.prometheus

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "alerts" / "optional" / "perfmon.rules.yml"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
RETENTION_S = DEFAULT_ALARM_RETENTION_S  # how long the exporter exposes each alarm's series
RUNBOOK = MixinConfig().runbook_url + "#perfmonalarm"
INSTANCE = {"instance": "host-a:9177", "job": "virt-exporter"}


def run_promtool(tmp_path, name, doc):
    run_promtool_files(tmp_path, [(name, doc)])


def run_promtool_files(tmp_path, named_docs):
    """One promtool process over several test files (each names its own rule files)."""
    paths = []
    for name, doc in named_docs:
        path = tmp_path / name
        path.write_text(yaml.safe_dump(doc, sort_keys=False, width=10_000))
        paths.append(str(path))
    p = subprocess.run([PROMTOOL, "test", "rules", *paths], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, (p.stdout + p.stderr)[-6000:]


def series(name, labels):
    return "%s{%s}" % (name, ",".join('%s="%s"' % kv for kv in sorted(labels.items())))


# XenServer's alarm priorities as severities, written out here (docs/perfmon.md): 1-2 critical, 3-4
# warning, 5 info. The generated variables use priorities 1 to 5.
SEVERITY = {"1": "critical", "2": "critical", "3": "warning", "4": "warning", "5": "info"}


def shortest(text):
    """A level as the rules print it: an integer without a fraction, else Python's shortest repr."""
    x = float(text)
    return str(int(x)) if x.is_integer() else repr(x)


def go_float(v):
    """Go's %v for the floats used here (shortest digits; Go switches to exponents from 1e6 up)."""
    assert v == 0 or 1e-4 <= abs(v) < 1e6, v
    text = repr(float(v))
    return text[:-2] if text.endswith(".0") else text


# --- the model, run on per-step values --------------------------------------------------------------

def run_model(step_s, xml, values_per_step):
    """Seed model over ``values_per_step`` (steps 1..n at k × step). Returns (alarms, bad) where bad
    maps variable → list of per-step bad flags (index k-1)."""
    seed = SeedVM(step_s, xml, t0_s=0)
    bad = {v.name: [] for v in seed.variables}
    for k, values in enumerate(values_per_step, start=1):
        seed.run(k * step_s, values)
        for v in seed.variables:
            bad[v.name].append(v.value is not None and v.test_level())
    return seed.perfmon.alarms, bad


def random_values(rng, n):
    out, cur = [], None
    for _ in range(n):
        if cur is None or rng.random() < 0.25:
            cur = {"cpu0": rng.randint(0, 16) / 16, "cpu1": rng.randint(0, 16) / 16,
                   "vif_0_rx": rng.randint(0, 1000), "vif_0_tx": rng.randint(0, 1000),
                   "vbd_vda_read": rng.randint(0, 1000), "vbd_vda_write": rng.randint(0, 1000)}
        out.append(dict(cur))
    return out


def random_vars(rng, step_s, min_inhibit_s=0):
    variables = []
    for i in range(rng.randint(1, 3)):
        kind = rng.choice(["cpu", "net", "disk"])
        var = {"name": "%s_%d" % (kind, i)}
        if kind == "cpu":
            var.update(rrd_regex=rng.choice(["cpu[0-9]+", "cpu1"]), consolidation_fn=rng.choice(["average", "max"]),
                       alarm_trigger_level=str((rng.randint(0, 15) + rng.choice([0, 0.5])) / 16))
        elif kind == "net":
            var.update(rrd_regex=rng.choice(["vif_[0-9]+_[rt]x", "_tx$"]), consolidation_fn=rng.choice(["sum", "max"]),
                       alarm_trigger_level=str(rng.randint(0, 1500)))
        else:
            var.update(rrd_regex=rng.choice(["vbd_(xvd|hd|vd|sd)[a-z]+_(read|write)", "vbd_vda_write"]),
                       consolidation_fn=rng.choice(["sum", "average", "max"]),
                       alarm_trigger_level=str(rng.randint(0, 1500)))
        var.update(alarm_trigger_sense=rng.choice(["high", "low"]),
                   alarm_trigger_period=str(rng.choice([0, step_s, rng.randint(1, 6 * step_s)])),
                   alarm_auto_inhibit_period=str(max(min_inhibit_s, rng.randint(0, 30) * step_s)),
                   alarm_priority=str(rng.randint(1, 5)))
        variables.append(var)
    return variables


# --- PerfmonAlarm -------------------------------------------------------------------------------------

def perfmon_alarm_case(step_s, scrape_s, variables, values):
    """One promtool test group from the model's alarms for ``variables``: each sent alarm is the series
    the exporter exposes from the alarm for RETENTION_S (scraped every ``scrape_s``, then a stale marker),
    and PerfmonAlarm must fire for it, with its identity in the labels, at exactly the evaluations that
    see it. Returns (group, sent count)."""
    alarms, _bad = run_model(step_s, config_xml(variables), values)
    sent = [(t, name, prio, value) for (t, _o, _u, name, prio, value, ok) in alarms if ok]
    end_s = len(values) * step_s + RETENTION_S + 2 * scrape_s
    scrapes = range(0, end_s + 1, scrape_s)
    inputs, present = [], {}
    for t, name, prio, value in sent:
        labels = dict(INSTANCE, object="vm", domain="guest-a", variable=name, priority=prio,
                      alarm_time="%.3f" % (T0_S + t))
        seen = [t <= s < t + RETENTION_S for s in scrapes]
        gone = [s >= t + RETENTION_S for s in scrapes].index(True)
        tokens = [go_float(value) if on else ("stale" if k == gone else "_") for k, on in enumerate(seen)]
        inputs.append({"series": series("libvirt_perfmon_alarm_value", labels), "values": " ".join(tokens)})
        present[tuple(sorted(labels.items()))] = (seen, value)
    checks = []
    for k, e in enumerate(scrapes):
        exp = []
        for key, (seen, value) in present.items():
            if seen[k]:
                labels = dict(key)
                dom = " guest-a"
                exp.append({"exp_labels": dict(labels, severity=SEVERITY[labels["priority"]]),
                            "exp_annotations": {
                                "summary": "perfmon alarm: vm%s %s (priority %s)" % (dom, labels["variable"],
                                                                                   labels["priority"]),
                                "description": "The perfmon engine on %s sent an alarm for vm%s: %s was %s at %s "
                                "(Unix seconds), beyond its alarm_trigger_level for its alarm_trigger_period (see "
                                "the perfmon config given with --perfmon.config). The next alarm of this variable "
                                "comes no sooner than its alarm_auto_inhibit_period."
                                % (labels["instance"], dom, labels["variable"], go_float(value),
                                   labels["alarm_time"]),
                                "runbook_url": RUNBOOK}})
        checks.append({"eval_time": "%ds" % e, "alertname": "PerfmonAlarm", "exp_alerts": exp})
    return {"interval": "%ds" % scrape_s, "input_series": inputs, "alert_rule_test": checks}, len(sent)


def test_perfmon_alarm_fires_for_each_alarm_series_at_any_interval(tmp_path):
    """At 5, 15 and 60 s scrape = evaluation intervals, with the shipped rules file (no interval of its
    own). Inhibit periods from 0 up, so one variable often has several alarms exposed at once."""
    rng = random.Random(2024)
    files, total = [], 0
    for scrape_s in (5, 15, 60):
        groups = []
        # Hand-written: always bad, period 10 s, step 5 s, inhibit 20 s → alarms at 10, 30, 50 … s.
        cases = [(5, [{"name": "cpu_usage", "rrd_regex": "cpu[0-9]+", "consolidation_fn": "average",
                       "alarm_trigger_level": "0.5", "alarm_trigger_period": "10",
                       "alarm_auto_inhibit_period": "20", "alarm_priority": "3"}], [{"cpu0": 1.0, "cpu1": 1.0}] * 12)]
        for _ in range(12):
            step_s = rng.choice([5, 60])
            n = rng.randint(10, 40) if step_s == 5 else rng.randint(3, 8)
            cases.append((step_s, random_vars(rng, step_s), random_values(rng, n)))
        for step_s, variables, values in cases:
            group, sent = perfmon_alarm_case(step_s, scrape_s, variables, values)
            groups.append(group)
            total += sent
        files.append(("perfmon_alarm_%ds.test.yml" % scrape_s,
                      {"rule_files": [str(RULES)], "evaluation_interval": "%ds" % scrape_s, "tests": groups}))
    assert total > 60
    run_promtool_files(tmp_path, files)


def test_perfmon_rule_group_has_no_interval_of_its_own():
    doc = yaml.safe_load(RULES.read_text())
    assert [g["name"] for g in doc["groups"]] == ["perfmon"]
    assert "interval" not in doc["groups"][0]


# --- native rules -------------------------------------------------------------------------------------

COUNTERS = [  # (engine data source, raw metric, labels, unit divisor)
    ("cpu0", "libvirt_domain_vcpu_seconds_total", {"vcpu": "0"}),
    ("cpu1", "libvirt_domain_vcpu_seconds_total", {"vcpu": "1"}),
    ("vif_0_rx", "libvirt_domain_interface_receive_bytes_total", {"interface": "vnet0"}),
    ("vif_0_tx", "libvirt_domain_interface_transmit_bytes_total", {"interface": "vnet0"}),
    ("vbd_vda_read", "libvirt_domain_block_read_bytes_total", {"target": "vda"}),
    ("vbd_vda_write", "libvirt_domain_block_write_bytes_total", {"target": "vda"}),
]


def native_case(step_s, variables, values, domain="guest-a"):
    """Expected native firing from the model: at step k a variable's alert fires iff the model is in a
    bad spell at k that already made an alarm attempt (sent or inhibited)."""
    xml = config_xml(variables)
    alarms, bad = run_model(step_s, xml, values)
    attempts = {(t // step_s, name) for (t, _o, _u, name, _p, _v, _ok) in alarms}
    inputs = []
    for ds, metric, extra in COUNTERS:
        total, tokens = 0.0, ["0"]
        for v in values:
            total += v[ds] * step_s
            tokens.append(repr(total))
        inputs.append({"series": series(metric, dict(INSTANCE, domain=domain, **extra)), "values": " ".join(tokens)})
    firing = {v["name"]: [False] * (len(values) + 1) for v in variables}
    onsets, first_attempts = set(), set()
    for var in variables:
        name, in_alarm = var["name"], False
        for k in range(1, len(values) + 1):
            if not bad[name][k - 1]:
                in_alarm = False
            elif (k, name) in attempts and not in_alarm:
                in_alarm = True
                first_attempts.add((k, name))
            firing[name][k] = in_alarm
            if in_alarm and not firing[name][k - 1]:
                onsets.add((k, name))
    assert onsets == first_attempts
    model_values = {}
    seed = SeedVM(step_s, xml, t0_s=0)
    for k, vals in enumerate(values, start=1):
        seed.run(k * step_s, vals)
        for v in seed.variables:
            model_values[(k, v.name)] = v.value
    checks = []
    for k in range(0, len(values) + 1):
        exp = []
        for var in variables:
            name = var["name"]
            if not firing[name][k]:
                continue
            # written out from the variable as the test made it, not from the generated rule
            labels = {"object": "vm", "variable": name, "priority": var["alarm_priority"],
                      "severity": SEVERITY[var["alarm_priority"]], "perfmon_rule": "vm/%s/%s" % (domain, name)}
            summary = "perfmon vm %s %s %s %s for %ss" % (
                domain, name, "above" if var["alarm_trigger_sense"] == "high" else "below",
                shortest(var["alarm_trigger_level"]), var["alarm_trigger_period"])
            exp.append({"exp_labels": dict(INSTANCE, domain=domain, **labels),
                        "exp_annotations": {"summary": summary, "value": go_float(model_values[(k, name)])}})
        checks.append({"eval_time": "%ds" % (k * step_s), "alertname": "PerfmonNative", "exp_alerts": exp})
    sent = [(t // step_s, n) for (t, _o, _u, n, _p, _v, ok) in alarms if ok]
    return ({"interval": "%ds" % step_s, "input_series": inputs, "alert_rule_test": checks},
            onsets, sent, len(attempts))


@pytest.mark.parametrize("step_s,sequences", [(5, 40), (60, 25)])
def test_native_rules_match_the_model_where_they_can(tmp_path, step_s, sequences):
    rng = random.Random(step_s)
    files = []
    stats = {"onsets": 0, "sent_first_in_spell": 0, "inhibited_onsets": 0, "rearmed_alarms": 0}
    for i in range(sequences):
        variables = random_vars(rng, step_s)
        xml = config_xml(variables)
        domain = "guest-%d" % i  # generated with --domain, as for a domain's own metadata config
        rules, warnings = native_rules([(parse_object_config(xml, "vm"), domain)], step_s)
        assert warnings == []
        values = random_values(rng, rng.randint(20, 60))
        group, onsets, sent, _attempts = native_case(step_s, variables, values, domain)
        # Where native rules match perfmon: every alarm that opens a bad spell is an onset at the same step.
        first_sent = {a for a in sent if a in onsets}
        stats["onsets"] += len(onsets)
        stats["sent_first_in_spell"] += len(first_sent)
        stats["inhibited_onsets"] += len(onsets - set(sent))     # deviation: inhibit across clear-and-return
        stats["rearmed_alarms"] += len(set(sent) - onsets)       # deviation: re-arming within a spell
        for g in rules["groups"]:
            g.pop("interval", None)  # promtool evaluates every group at the test's evaluation_interval
        rules_path = tmp_path / ("native-%d.rules.yml" % i)
        rules_path.write_text(yaml.safe_dump(rules, sort_keys=False, width=10_000))
        files.append(("native-%d.test.yml" % i, {"rule_files": [str(rules_path)],
                                                  "evaluation_interval": "%ds" % step_s, "tests": [group]}))
    assert stats["onsets"] > 30 and stats["sent_first_in_spell"] > 20
    assert stats["inhibited_onsets"] > 0 and stats["rearmed_alarms"] > 0  # both deviations are exercised
    run_promtool_files(tmp_path, files)


def test_native_sum_over_nothing_is_no_series_unlike_perfmon(tmp_path):
    """Documented deviation: perfmon's sum([]) is 0, so a low-sense variable over nothing alarms; the
    native rule has no series to compare and stays silent."""
    variables = [{"name": "none", "rrd_regex": "^nothing$", "consolidation_fn": "sum", "alarm_trigger_level": "1",
                  "alarm_trigger_sense": "low", "alarm_trigger_period": "5", "alarm_auto_inhibit_period": "0",
                  "alarm_priority": "5"}]
    values = [{"cpu0": 0.5, "cpu1": 0.5, "vif_0_rx": 1, "vif_0_tx": 1, "vbd_vda_read": 1, "vbd_vda_write": 1}] * 4
    alarms, _ = run_model(5, config_xml(variables), values)
    assert [(t, ok) for (t, *_rest, ok) in alarms] == [(5, True), (10, True), (15, True), (20, True)]
    rules, _ = native_rules([(parse_object_config(config_xml(variables), "vm"), None)], 5)
    group, *_ = native_case(5, variables, values)
    for check in group["alert_rule_test"]:
        check["exp_alerts"] = []
    for g in rules["groups"]:
        g.pop("interval", None)
    (tmp_path / "none.rules.yml").write_text(yaml.safe_dump(rules, sort_keys=False, width=10_000))
    run_promtool(tmp_path, "none.test.yml", {"rule_files": [str(tmp_path / "none.rules.yml")],
                                            "evaluation_interval": "5s", "tests": [group]})


def test_shipped_rules_pass_promtool_check():
    p = subprocess.run([PROMTOOL, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
