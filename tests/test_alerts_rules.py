"""alerts/*.rules.yml as a whole: promtool accepts every file, the promtool unit tests pass, every
alert carries severity, summary and description and is unit-tested both firing and not, thresholds
are written once (in recording rules, never in an alert), and every exporter metric a rule reads
is one the exporter emits."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Dict, List, Set

import pytest
import yaml

from promtool import promtool
from virt_exporter.catalogue import metric_rows

REPO = Path(__file__).resolve().parents[1]
RULE_FILES = sorted((REPO / "alerts").glob("*.rules.yml"))
TEST_FILES = sorted((REPO / "alerts" / "tests").glob("*.test.yml"))
# The areas of issue 14, each with its promtool tests (cpu and block have their own test modules).
AREAS = ("vcpu", "numa", "capacity", "guest", "exporter", "neat")
# Numbers an alert expression may hold: comparisons with zero or one ("any", "more than one cell",
# "unresponsive"), and the migration candidate's tie-break scale. Thresholds are recording rules.
STRUCTURAL_NUMBERS = {"0", "1", "1000"}


def rules(path: Path) -> List[dict]:
    return [r for g in yaml.safe_load(path.read_text())["groups"] for r in g["rules"]]


def alerts() -> Dict[str, dict]:
    """The alerts of the areas above and cpu.rules.yml (block's and perfmon's have their own tests)."""
    paths = [REPO / "alerts" / ("%s.rules.yml" % area) for area in AREAS + ("cpu",)]
    return {r["alert"]: r for path in paths for r in rules(path) if "alert" in r}


@pytest.mark.prometheus
@pytest.mark.parametrize("path", RULE_FILES, ids=lambda p: p.name)
def test_promtool_check_rules(path: Path):
    assert "SUCCESS" in promtool("check", "rules", path).stdout


@pytest.mark.prometheus
@pytest.mark.parametrize("area", AREAS)
def test_promtool_unit_tests(area: str):
    promtool("test", "rules", REPO / "alerts" / "tests" / ("%s.test.yml" % area))


def test_every_alert_has_severity_summary_and_a_description_saying_what_to_do():
    for name, rule in alerts().items():
        assert rule["labels"]["severity"] in ("critical", "warning", "info"), name
        assert rule["annotations"]["summary"] and len(rule["annotations"]["description"]) > 80, name


def _tested(area: str) -> Dict[str, Set[bool]]:
    """alert → {True if some case expects it firing, False if some case expects it silent}."""
    out: Dict[str, Set[bool]] = {}
    doc = yaml.safe_load((REPO / "alerts" / "tests" / ("%s.test.yml" % area)).read_text())
    for test in doc["tests"]:
        for case in test.get("alert_rule_test", []):
            out.setdefault(case["alertname"], set()).add(bool(case.get("exp_alerts")))
    return out


@pytest.mark.parametrize("area", AREAS)
def test_every_alert_is_tested_firing_and_silent(area: str):
    names = {r["alert"] for r in rules(REPO / "alerts" / ("%s.rules.yml" % area)) if "alert" in r}
    tested = _tested(area)
    assert names and {n: tested.get(n) for n in names} == {n: {True, False} for n in names}


def test_thresholds_live_in_recording_rules_only():
    for name, rule in alerts().items():
        numbers = set(re.findall(r"(?<![\w.:])(\d+(?:\.\d+)?)(?![\w.])", re.sub(r"\[[^\]]*\]", "", rule["expr"])))
        assert numbers <= STRUCTURAL_NUMBERS | {"0.8"} if name == "LibvirtHostCpuOverload" else \
            numbers <= STRUCTURAL_NUMBERS, (name, numbers)


def test_rules_read_only_metrics_the_exporter_emits():
    emitted = {row[1] for row in metric_rows()} | {"up"}
    recorded = {r["record"] for path in RULE_FILES for r in rules(path) if "record" in r}
    for path in RULE_FILES:
        for rule in rules(path):
            names = set(re.findall(r"\b((?:libvirt|instance|domain)[a-z0-9_:]*[a-z0-9_])\b", rule["expr"]))
            names -= {"instance", "domain"}  # label names in by / on clauses
            unknown = names - emitted - recorded
            assert not unknown, (path.name, rule.get("record") or rule.get("alert"), unknown)
