"""alerts/cpu.rules.yml: promtool check + the promtool unit tests, and that every exporter metric the
rules read is one the cpu_usage (or domain) collector really emits."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from promtool import promtool
from samples import cpu_sample, domain
from virt_exporter.collectors import cpu_usage
from virt_exporter.collectors import domain as domain_collector
from virt_exporter.collectors.base import ScrapeContext
from virt_exporter.sample import Sample

REPO = Path(__file__).resolve().parents[1]
RULES = REPO / "alerts/cpu.rules.yml"
RULE_TESTS = REPO / "alerts/tests/cpu.test.yml"


@pytest.mark.prometheus
def test_promtool_check_rules():
    assert "SUCCESS: 9 rules found" in promtool("check", "rules", RULES).stdout


@pytest.mark.prometheus
def test_promtool_unit_tests_threshold_edges():
    promtool("test", "rules", RULE_TESTS)


def test_threshold_factor_is_written_once_in_its_threshold_rule():
    rules = {r.get("record") or r["alert"]: r["expr"] for g in yaml.safe_load(RULES.read_text())["groups"]
             for r in g["rules"]}
    assert [name for name, expr in rules.items() if "0.8" in expr] == ["instance:libvirt_cpu_overload_threshold:ratio"]
    assert "instance:libvirt_cpu_overload_threshold:ratio" in rules["instance:libvirt_cpu_overload_threshold:mhz"]


def _emitted_names() -> set:
    def sample(t: float, cpu_ns: int, busy: int) -> Sample:
        return cpu_sample(t, [domain("u", cpu_ns)], busy, 1000 + 2 * busy)

    ctx = ScrapeContext(current=sample(12.0, 2_000_000_000, 300), previous=sample(10.0, 0, 0), domain_info={})
    names = set()
    for fam in cpu_usage.collect(ctx):
        assert fam.samples, fam.name  # two samples: every family has a value
        names.add(fam.name)
    for fam in domain_collector.collect(ctx):  # libvirt_domain_state: Neat counts running VMs
        names.add(fam.name)
    return names


def test_rules_read_only_metrics_the_exporter_emits():
    exprs = " ".join(r["expr"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"])
    # exporter metrics, not recorded series (level:metric:operation names contain colons)
    used = set(re.findall(r"(?<![:\w])libvirt_[a-z_]+(?![:\w])", exprs)) - {"libvirt_up"}
    assert used, "the rules read no exporter metric"
    assert used <= _emitted_names(), used - _emitted_names()
