"""alerts/job.rules.yml: promtool accepts it, its unit tests pass, both alerts are tested firing and
silent, and the knobs live in recording rules."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from promtool import promtool

REPO = Path(__file__).resolve().parents[1]
RULES = REPO / "alerts" / "job.rules.yml"
TESTS = REPO / "alerts" / "tests" / "job.test.yml"


def rules() -> list:
    return [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]


@pytest.mark.prometheus
def test_promtool_checks_and_unit_tests_pass():
    assert "SUCCESS" in promtool("check", "rules", RULES).stdout
    promtool("test", "rules", TESTS)


def test_both_alerts_tested_firing_and_silent_with_runbook_text():
    tested: dict = {}
    for test in yaml.safe_load(TESTS.read_text())["tests"]:
        for case in test.get("alert_rule_test", []):
            tested.setdefault(case["alertname"], set()).add(bool(case.get("exp_alerts")))
    alerts = {r["alert"]: r for r in rules() if "alert" in r}
    assert set(alerts) == {"LibvirtDomainMigrationNotConverging", "LibvirtDomainJobFailed"}
    assert {name: tested.get(name) for name in alerts} == {name: {True, False} for name in alerts}
    runbook = (REPO / "docs" / "runbook-job.md").read_text()
    for name, rule in alerts.items():
        assert rule["labels"]["severity"] in ("critical", "warning", "info")
        assert "docs/runbook-job.md" in rule["annotations"]["description"]
        assert "## %s" % name in runbook


def test_thresholds_live_in_recording_rules_only():
    for rule in rules():
        if "alert" in rule:
            numbers = set(re.findall(r"(?<![\w.:])(\d+(?:\.\d+)?)(?![\w.])", re.sub(r"\[[^\]]*\]|offset \w+", "",
                                                                                  rule["expr"])))
            assert numbers <= {"0"}, (rule["alert"], numbers)
