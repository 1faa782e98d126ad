"""alerts/ as a whole: promtool accepts every rules file (the optional ones too) and every unit test
passes, also with a second job exposing the same metric names beside ours; every alert carries `for`,
severity, summary, description and a runbook link whose anchor exists, and is unit-tested both firing
and not; every series selector carries the job selector; no threshold is a number inside an alert;
recorded names follow level:metric:operations; every exporter metric a rule reads is one the exporter
emits."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Dict, Iterator, List, Set, Tuple

import pytest
import yaml

from promtool import promtool
from samples import sample
from virt_exporter.catalogue import metric_rows

REPO = Path(__file__).resolve().parents[1]
ALERTS = REPO / "alerts"
RULE_FILES = sorted(ALERTS.glob("*.rules.yml")) + sorted((ALERTS / "optional").glob("*.rules.yml"))
TEST_FILES = sorted((ALERTS / "tests").glob("*.test.yml"))
RUNBOOK = REPO / "docs" / "runbook.md"
JOB_MATCHER = 'job="virt-exporter"'
OVERRIDE = "instance:virt_exporter_threshold:override"
# PerfmonAlarm's expression and its tests belong to the perfmon engine (tests/perfmon): its number
# windows are the delivery contract documented in the rules file, not thresholds.
PERFMON = "PerfmonAlarm"
# Numbers an alert expression may hold, and why: none of them is a threshold an operator tunes.
STRUCTURAL_NUMBERS = {
    "0": "none / any (a count, a boolean, a counter's increase)",
    "1": "true, running (libvirt_domain_state 1), at least one VM",
    "3": "libvirt_domain_state 3 = paused",
    "5": "libvirt_domain_state_reason 5 = VIR_DOMAIN_PAUSED_IOERROR",
    "1000": "the migration candidate's tie-break scale (MHz / 1000 stays under 1 KiB)",
}


def rules(path: Path) -> List[dict]:
    return [r for g in yaml.safe_load(path.read_text())["groups"] for r in g["rules"]]


def all_rules() -> Iterator[Tuple[Path, dict]]:
    for path in RULE_FILES:
        for rule in rules(path):
            yield path, rule


def alerts() -> Dict[str, dict]:
    return {r["alert"]: r for _path, r in all_rules() if "alert" in r}


# --- an expression reader, independent of the generator's own ---------------------------------------

_STRING = r'"(?:[^"\\]|\\.)*"'
_DURATION = r"(?:\d+(?:ms|[smhdwy]))+(?![\w.])"  # after `offset`
_TOKEN = re.compile("|".join([_STRING, r"`[^`]*`", r'\{(?:%s|[^}"])*\}' % _STRING, r"\[[^\]]*\]",
                              _DURATION, r"[A-Za-z_:][\w:]*", r"\d+(?:\.\d+)?(?:e[+-]?\d+)?", r"\S"]))
_KEYWORDS = {"and", "or", "unless", "bool", "offset"}
_MODIFIERS = {"by", "without", "on", "ignoring", "group_left", "group_right"}


def selectors(expr: str) -> List[Tuple[str, str]]:
    """(series name, its {matchers} or "") for every series selector of ``expr``."""
    tokens = _TOKEN.findall(expr)
    out = []
    skip_list = False
    for i, tok in enumerate(tokens):
        nxt = tokens[i + 1] if i + 1 < len(tokens) else ""
        if skip_list:
            skip_list = tok != ")"
            continue
        if tok in _MODIFIERS:
            skip_list = nxt == "("
            continue
        # a function or an aggregation (`sum without (x) (...)`) is no series
        if not re.match(r"[A-Za-z_:]", tok) or tok in _KEYWORDS or nxt in ("(", "by", "without"):
            continue
        out.append((tok, nxt if nxt.startswith("{") else ""))
    return out


def numbers(expr: str) -> Set[str]:
    """Number literals of ``expr`` outside strings, range windows and selectors."""
    return {t for t in _TOKEN.findall(expr) if re.match(r"\d", t) and not re.fullmatch(_DURATION, t)}


def test_expression_reader():
    expr = ('sum without (domain) (rate(libvirt_x{job="j",a="}"}[5m])) > on (instance, job) group_left () '
            'instance:y:ratio or absent(up{job="j"}) and 0.5 * label_replace(z, "a", "b", "c", ".*") '
            'unless w offset 1h30m')
    assert selectors(expr) == [("libvirt_x", '{job="j",a="}"}'), ("instance:y:ratio", ""), ("up", '{job="j"}'),
                               ("z", ""), ("w", "")]
    assert numbers(expr) == {"0.5"}


# --- promtool ---------------------------------------------------------------------------------------

@pytest.mark.prometheus
@pytest.mark.parametrize("path", RULE_FILES, ids=lambda p: p.relative_to(ALERTS).as_posix())
def test_promtool_check_rules(path: Path):
    assert "SUCCESS" in promtool("check", "rules", path).stdout


@pytest.mark.prometheus
@pytest.mark.parametrize("path", TEST_FILES, ids=lambda p: p.name)
def test_promtool_unit_tests(path: Path):
    promtool("test", "rules", path)


def with_second_job(doc: dict, test_dir: Path) -> dict:
    """The unit test ``doc`` with every input series of our job also exposed by another job, on the same
    hosts (a peer libvirt exporter beside ours), and every expectation unchanged."""
    doc = dict(doc, rule_files=[str((test_dir / p).resolve()) for p in doc["rule_files"]])
    count = 0
    for test in doc["tests"]:
        twins = [dict(s, series=s["series"].replace(JOB_MATCHER, 'job="other-exporter"'))
                 for s in test["input_series"] if JOB_MATCHER in s["series"]]
        test["input_series"] = test["input_series"] + twins
        count += len(twins)
    assert count, "the tests feed no series of our job"
    return doc


@pytest.mark.prometheus
@pytest.mark.parametrize("path", TEST_FILES, ids=lambda p: p.name)
def test_a_second_job_with_the_same_metrics_changes_no_result(path: Path, tmp_path: Path):
    doc = with_second_job(yaml.safe_load(path.read_text()), path.parent)
    out = tmp_path / path.name
    out.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))
    promtool("test", "rules", out)


# --- what every alert carries -----------------------------------------------------------------------

def runbook_anchors() -> Set[str]:
    """GitHub's anchors of the runbook's headings."""
    out = set()
    for line in RUNBOOK.read_text().splitlines():
        m = re.match(r"#+\s+(.*)", line)
        if m:
            out.add(re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-"))
    return out


def test_every_alert_has_for_severity_summary_description_and_a_runbook_section():
    anchors = runbook_anchors()
    found = alerts()
    assert len(found) >= 20
    for name, rule in found.items():
        assert re.fullmatch(r"(\d+[smhdwy])+", rule["for"]), name
        severity = rule.get("labels", {}).get("severity")
        if name == PERFMON:  # severity from the alarm's priority, set in the expression
            assert '"severity", "critical"' in rule["expr"]
        else:
            assert severity in ("critical", "warning", "info"), name
        ann = rule["annotations"]
        assert ann["summary"] and len(ann["description"]) > 80, name
        url = ann["runbook_url"]
        assert url == "docs/runbook.md#" + name.lower(), (name, url)
        assert url.split("#")[1] in anchors, "docs/runbook.md has no section %s" % name


def test_runbook_sections_say_what_it_means_what_breaks_how_to_confirm_and_what_to_do():
    text = RUNBOOK.read_text()
    for name in alerts():
        section = text.split("\n## %s\n" % name, 1)[1].split("\n## ", 1)[0]
        for part in ("**Means**", "**Breaks**", "**Confirm**", "**Do**"):
            assert part in section, (name, part)
        assert "```" in section, "%s: no command to confirm it" % name


def _tested() -> Dict[str, Set[bool]]:
    """alert → {True if some case expects it firing, False if some case expects it silent}."""
    out: Dict[str, Set[bool]] = {}
    for path in TEST_FILES:
        for test in yaml.safe_load(path.read_text())["tests"]:
            for case in test.get("alert_rule_test", []):
                out.setdefault(case["alertname"], set()).add(bool(case.get("exp_alerts")))
    return out


def test_every_alert_is_tested_firing_and_silent():
    tested = _tested()
    names = set(alerts()) - {PERFMON}
    assert {n: tested.get(n) for n in names} == {n: {True, False} for n in names}


# --- expressions ------------------------------------------------------------------------------------

def test_every_selector_carries_the_job_selector():
    for path, rule in all_rules():
        found = selectors(rule["expr"])
        assert found, (path.name, rule)
        for name, matchers in found:
            if name == OVERRIDE:  # the operator's series, keyed by instance
                continue
            assert JOB_MATCHER in matchers, (path.name, rule.get("alert") or rule.get("record"), name)


def test_no_threshold_is_a_number_inside_an_alert():
    for name, rule in alerts().items():
        if name == PERFMON:
            continue
        assert numbers(rule["expr"]) <= set(STRUCTURAL_NUMBERS), (name, numbers(rule["expr"]))


def test_thresholds_are_recorded_with_an_override_or_the_default():
    thresholds = [r for _p, r in all_rules() if "record" in r and OVERRIDE in r["expr"]]
    assert len(thresholds) >= 13
    for rule in thresholds:
        assert re.search(r"_threshold:[a-z_]+$|_bandwidth:bytes_per_second$", rule["record"]), rule["record"]
        override, default = rule["expr"].split("\nor\n")
        assert "max by (instance)" in override and "threshold=" in override
        assert re.fullmatch(r"\s*0 \* libvirt_up\{[^}]*\} \+ [0-9.e+-]+\s*", default), rule


def test_recorded_names_follow_level_metric_operations():
    for _path, rule in all_rules():
        if "record" in rule:
            assert re.fullmatch(r"(instance|domain):libvirt_[a-z0-9_]+:[a-z0-9_]+", rule["record"]), rule["record"]


def test_rules_read_only_metrics_the_exporter_emits():
    emitted = {row[1] for row in metric_rows()} | {"up"}
    recorded = {r["record"] for _p, r in all_rules() if "record" in r} | {OVERRIDE}
    for path, rule in all_rules():
        unknown = {name for name, _m in selectors(rule["expr"])} - emitted - recorded
        assert not unknown, (path.name, rule.get("record") or rule.get("alert"), unknown)


# --- the two-node NUMA fixture through the remote-memory rule ---------------------------------------

FIXTURE = REPO / "tests" / "fixtures" / "numa" / "twonode"
N0_BYTES, N1_BYTES = 1_090_756_608, 2_038_497_280  # the fixture's numa_maps per node (tests/source/test_numa.py)


def _fixture_series(root: Path) -> List[dict]:
    """The numa collector's series for the fixture's QEMU (pid 4242, domain "multi"), as promtool
    input series, through the real NUMA reader and collector; the host's two cells and libvirt_up."""
    from virt_exporter.collectors import numa as numa_collector
    from virt_exporter.collectors.base import ScrapeContext
    from virt_exporter.sample import DomainStats
    from virt_exporter.source.numa import NumaPlacementReader

    reader = NumaPlacementReader(root=str(root), interval_s=30)
    reader.set_targets({"u": ("multi", 4242)})
    reader.refresh_once()
    current = sample(domains=[DomainStats("u", "multi", {"state.state": 1})], qemu_pids={"u": 4242})
    ctx = ScrapeContext(current=current, previous=None, domain_info={}, numa=reader.snapshot())
    found = [(s.name, dict(s.labels), s.value) for fam in numa_collector.collect(ctx) for s in fam.samples]
    found += [("libvirt_host_numa_cell_memory_bytes", {"cell": c}, 17179869184) for c in ("0", "1")]
    found += [("libvirt_up", {}, 1)]
    return [{"series": "%s{%s}" % (name, ",".join('%s="%s"' % kv for kv in sorted(
                dict(labels, instance="h", job="virt-exporter").items()))),
             "values": "%rx40" % float(value)} for name, labels, value in found]


def _promtool_numa(tmp_path: Path, root: Path, ratio: float, fires: bool) -> None:
    alert = {"exp_labels": {"severity": "warning", "instance": "h", "job": "virt-exporter", "domain": "multi"},
             "exp_annotations": {
                 "summary": "Memory of multi on h is mostly on remote NUMA cells",
                 "runbook_url": "docs/runbook.md#libvirtdomainnumaremotememory",
                 "description": "%.4g%% of the resident memory of multi lies on host cells where none of its "
                                "vCPUs ran, for 30 minutes. Pin its vCPUs and memory to one cell (<numatune> and "
                                "<cputune> in the domain XML, virsh numatune / vcpupin), or give it a guest NUMA "
                                "topology that matches the host's." % (100 * ratio)}}
    doc = {"rule_files": [str(ALERTS / "numa.rules.yml")], "evaluation_interval": "1m",
           "tests": [{"interval": "1m", "input_series": _fixture_series(root),
                      "promql_expr_test": [{"expr": "domain:libvirt_numa_remote_memory:ratio", "eval_time": "5m",
                                            "exp_samples": [{"labels": 'domain:libvirt_numa_remote_memory:ratio'
                                                                       '{domain="multi",instance="h",'
                                                                       'job="virt-exporter"}',
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
