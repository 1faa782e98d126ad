"""alerts/*.rules.yml as a whole: promtool accepts every file, the promtool unit tests pass, every
alert carries severity, summary and description and is unit-tested both firing and not, thresholds
are written once (in recording rules, never in an alert), and every exporter metric a rule reads
is one the exporter emits."""

from __future__ import annotations

import re
import shutil
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


# --- the two-node NUMA fixture through the remote-memory rule ---------------------------------------

FIXTURE = REPO / "tests" / "fixtures" / "numa" / "twonode"
N0_BYTES, N1_BYTES = 1_090_756_608, 2_038_497_280  # the fixture's numa_maps per node (tests/source/test_numa.py)


def _fixture_series(root: Path) -> List[dict]:
    """The numa collector's series for the fixture's QEMU (pid 4242, domain "multi"), as promtool
    input series, through the real NUMA reader and collector; the host's two cells and libvirt_up."""
    from virt_exporter.collectors import numa as numa_collector
    from virt_exporter.collectors.base import ScrapeContext
    from virt_exporter.sample import DomainStats, Sample
    from virt_exporter.source.numa import NumaPlacementReader

    reader = NumaPlacementReader(root=str(root), interval_s=30)
    reader.set_targets({"u": ("multi", 4242)})
    reader.refresh_once()
    sample = Sample(wall_time_s=0.0, monotonic_s=0.0, up=True, qemu_pids={"u": 4242},
                    domains={"u": DomainStats("u", "multi", {"state.state": 1})})
    ctx = ScrapeContext(current=sample, previous=None, domain_info={}, numa=reader.snapshot())
    found = [(s.name, dict(s.labels), s.value) for fam in numa_collector.collect(ctx) for s in fam.samples]
    found += [("libvirt_host_numa_cell_memory_bytes", {"cell": c}, 17179869184) for c in ("0", "1")]
    found += [("libvirt_up", {}, 1)]
    return [{"series": "%s{%s}" % (name, ",".join('%s="%s"' % kv for kv in sorted(
                dict(labels, instance="h", job="libvirt").items()))),
             "values": "%rx40" % float(value)} for name, labels, value in found]


def _promtool_numa(tmp_path: Path, root: Path, ratio: float, fires: bool) -> None:
    alert = {"exp_labels": {"severity": "warning", "instance": "h", "job": "libvirt", "domain": "multi"},
             "exp_annotations": {
                 "summary": "Memory of multi on h is mostly on remote NUMA cells",
                 "description": "%.4g%% of the resident memory of multi lies on host cells where none of its "
                                "vCPUs ran, for 30 minutes. Pin its vCPUs and memory to one cell (<numatune> and "
                                "<cputune> in the domain XML, virsh numatune / vcpupin), or give it a guest NUMA "
                                "topology that matches the host's." % (100 * ratio)}}
    doc = {"rule_files": [str(REPO / "alerts" / "numa.rules.yml")], "evaluation_interval": "1m",
           "tests": [{"interval": "1m", "input_series": _fixture_series(root),
                      "promql_expr_test": [{"expr": "domain:libvirt_numa_remote_memory:ratio", "eval_time": "5m",
                                            "exp_samples": [{"labels": 'domain:libvirt_numa_remote_memory:ratio'
                                                                       '{domain="multi",instance="h",job="libvirt"}',
                                                             "value": ratio}]}],
                      "alert_rule_test": [{"eval_time": "31m", "alertname": "LibvirtDomainNumaRemoteMemory",
                                           "exp_alerts": [alert] if fires else []}]}]}
    test = tmp_path / "numa-fixture.test.yml"
    test.write_text(yaml.safe_dump(doc))
    promtool("test", "rules", test)


@pytest.mark.prometheus
def test_the_two_node_fixture_has_no_remote_memory_vcpus_run_on_both_cells(tmp_path: Path):
    # vCPUs last ran on CPUs 1, 9, 4 and 12: cell 0 (0-7) and cell 1 (8-15) both run some
    _promtool_numa(tmp_path, FIXTURE, 0.0, fires=False)


@pytest.mark.prometheus
def test_the_two_node_fixture_with_every_vcpu_on_cell_0_has_cell_1_remote(tmp_path: Path):
    root = tmp_path / "twonode"
    shutil.copytree(FIXTURE, root, symlinks=True)
    for tid, cpu in (("4252", 2), ("4254", 5)):  # CPU 1/KVM ran on 9, CPU 3/KVM on 12: now 2 and 5
        stat = root / "proc/4242/task" / tid / "stat"
        text = stat.read_text()
        head, rest = text[:text.rindex(")") + 1], text[text.rindex(")") + 1:].split()
        rest[39 - 3] = str(cpu)
        stat.write_text(head + " " + " ".join(rest) + "\n")
    _promtool_numa(tmp_path, root, N1_BYTES / (N0_BYTES + N1_BYTES), fires=True)
