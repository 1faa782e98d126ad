"""dashboards/*.json: Grafana JSON that imports, and queries that work against a real Prometheus.

Static checks (no daemons): the shipped files are what virt_exporter.mixin.dashboards renders for the
default knobs; the JSON model is well formed, panel ids are unique and panels do not overlap, only the
overview row is expanded and a board's first load stays within FIRST_LOAD_QUERIES_MAX queries, every
target has an expression, every metric an expression reads is one the exporter exposes
(``virt_exporter.catalogue.metric_rows()``) or a recording rule of alerts/*.rules.yml, every selector is
filtered by the board's template variables (job, datacenter, host, domain), every variable used is
defined, the data source is a variable, units scale, state reasons are named as libvirt names them, and
no byte, hertz or second panel colours at a constant. promtool parses every expression.

Live check (libvirtd + Prometheus): the exporter runs against a busy, a blank and a writer guest (thin
qcow2 on a loop block device) with a perfmon config; a real Prometheus scrapes it every 2 s as job
virt-exporter (no datacenter label) and loads alerts/*.rules.yml. It also scrapes the same exporter as a
second job, "foreign", with a datacenter label: another exporter's libvirt_* series on the same
Prometheus, under the same instance name (as with instance set to the bare host name). Every variable
query and then every panel's query, with the template variables substituted as Grafana would, must
succeed without warnings and return data — except the few listed in NO_DATA_IN_TESTBED, which only have
data in situations the test bed does not create — and no answer may hold a series of the foreign job.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Set, Tuple

import pytest
import yaml

import testbed as tb  # tests/ is on sys.path (tests/conftest.py)
import watermark_bed as wb
from bounds import wait_for
from childproc import Process
from exporterproc import ExporterProcess, free_port
from promtool import promtool
from scrape import Samples
from virt_exporter.mixin import dashboards as generator
from virt_exporter.mixin.config import MixinConfig, parse_config

REPO = Path(__file__).resolve().parents[1]
DASHBOARDS = sorted((REPO / "dashboards").glob("*.json"))
RULE_FILES = sorted((REPO / "alerts").glob("*.rules.yml"))
DOMAIN_BOARD = REPO / "dashboards" / "virt-domain.json"
DATASOURCE_REF = {"type": "prometheus", "uid": "${datasource}"}
JOB = "virt-exporter"  # the default job selector's job, as in contrib's scrape config
# What Grafana sends for the job variable's All: the alternation of its values.
JOB_ALL = "(%s)" % JOB
DATACENTER_ALL = ".*"  # the datacenter variable's All value
HOST_MATCHERS = {"job": ("=~", "$job"), "datacenter": ("=~", "$datacenter"), "instance": ("=", "$instance")}
FIRST_LOAD_QUERIES_MAX = 20
# Units of a physical quantity: a panel in one colours by a series (a threshold drawn or divided by), never by
# a constant.
PHYSICAL_UNITS = {"bytes", "hertz", "s", "Bps", "iops", "pps"}

# Series Prometheus itself adds to every scrape; a panel may compare them with the exporter's own.
PROMETHEUS_SCRAPE_SERIES = {"up", "scrape_duration_seconds"}

# What Grafana substitutes, as the live check does it (2 s scrapes; a one-minute dashboard range).
RATE_INTERVAL, INTERVAL, RANGE = "10s", "2s", "1m"

# Panels (board file, panel title, refIds or None for all its targets) that have data only in situations
# the test bed does not create; for them the query must only succeed.
NO_DATA_IN_TESTBED: Dict[Tuple[str, str, Optional[str]], str] = {
    ("virt-domain.json", "Migration progress", None):
        "only while a domain job runs (tests/migration/ checks the job metrics during migrations)",
    ("virt-domain.json", "Migration transfer vs dirty rate", None):
        "only while a migration runs (tests/migration/ checks the job metrics during migrations)",
    ("virt-host.json", "Jobs ended (LibvirtDomainJobFailed)", None):
        "only after a domain job ended on the host (tests/migration/ counts them)",
    ("virt-domain.json", "Guest-reported memory", None):
        "needs a balloon driver in the guest OS; test guests run a boot-sector program",
    ("virt-domain.json", "Guest swap and page faults", None):
        "needs a balloon driver in the guest OS; test guests run a boot-sector program",
    ("virt-domain.json", "Guest memory pressure (LibvirtDomainGuestMemoryPressure)", "A"):
        "needs a balloon driver in the guest OS; test guests run a boot-sector program",
    ("virt-domain.json", "Guest memory pressure (LibvirtDomainGuestMemoryPressure)", "B"):
        "needs a balloon driver in the guest OS; test guests run a boot-sector program",
    ("virt-domain.json", "Autostart, persistence, metadata", "C"):
        "libvirt_domain_metadata_info needs --collector.domain.metadata-label",
    ("virt-domain.json", "Guest filesystem use", None): "the guest_agent collector is opt-in (--collector.guest_agent)",
    ("virt-domain.json", "Guest agent and OS", None): "the guest_agent collector is opt-in (--collector.guest_agent)",
}

PROMQL_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or",
                   "unless", "offset", "inf", "nan"}
GROUPING = {"by", "without", "on", "ignoring", "group_left", "group_right"}
PROMQL_FUNCTIONS = {
    "sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk", "bottomk", "quantile", "count_values",
    "group", "rate", "irate", "increase", "delta", "idelta", "deriv", "changes", "resets", "abs", "ceil",
    "floor", "round", "clamp", "clamp_min", "clamp_max", "vector", "scalar", "time", "timestamp", "absent",
    "absent_over_time", "label_replace", "label_join", "histogram_quantile", "sort", "sort_desc",
    "avg_over_time", "min_over_time", "max_over_time", "sum_over_time", "count_over_time", "last_over_time",
    "present_over_time", "quantile_over_time", "stddev_over_time", "predict_linear", "sgn", "exp", "ln",
    "log2", "log10", "sqrt",
}
GRAFANA_BUILTINS = re.compile(r"^__")

TOKEN = re.compile(r"""
    (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
  | (?P<var>\$\{[^}]+\}|\$[A-Za-z_][A-Za-z0-9_]*|\[\[[^\]]+\]\])
  | (?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?[smhdwy]?)
  | (?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
  | (?P<punct>[{}()\[\],])
  | (?P<op>=~|!~|!=|==|<=|>=|[-+*/%^<>=])
  | (?P<space>\s+)
""", re.X)
MATCHER = re.compile(r'\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*,?')
VARIABLE_REF = re.compile(r"\$\{([A-Za-z0-9_.]+)(?::[^}]*)?\}"      # ${name}, ${name:format}
                          r"|\$([A-Za-z_][A-Za-z0-9_]*)"              # $name
                          r"|\[\[([A-Za-z0-9_]+)(?::[^\]]*)?\]\]")    # [[name]] (deprecated syntax)


# --- reading dashboards ------------------------------------------------------------------------------

def load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def all_panels(board: dict) -> Iterator[dict]:
    for panel in board.get("panels", []):
        yield panel
        yield from panel.get("panels", [])  # panels of a collapsed row


def query_panels(board: dict) -> Iterator[dict]:
    return (p for p in all_panels(board) if p.get("type") != "row")


def targets(board: dict) -> Iterator[Tuple[dict, dict]]:
    for panel in query_panels(board):
        for target in panel.get("targets", []):
            yield panel, target


def tokens(expr: str) -> List[Tuple[str, str]]:
    out, pos = [], 0
    while pos < len(expr):
        m = TOKEN.match(expr, pos)
        assert m, "cannot tokenize %r at %r" % (expr, expr[pos:pos + 20])
        pos = m.end()
        if m.lastgroup != "space":
            out.append((m.lastgroup, m.group()))
    return out


def selectors(expr: str) -> List[Tuple[str, Dict[str, Tuple[str, str]]]]:
    """(metric name, {label: (op, value)}) of every vector selector in a PromQL expression; function
    names must be known ones."""
    toks = tokens(expr)
    out = []
    i = 0
    while i < len(toks):
        kind, text = toks[i]
        nxt = toks[i + 1][1] if i + 1 < len(toks) else ""
        if kind == "punct" and text == "[":  # a range or subquery: durations and $__ variables
            while toks[i][1] != "]":
                i += 1
        elif kind == "ident" and text in GROUPING and nxt == "(":  # a label list
            while toks[i][1] != ")":
                i += 1
        elif kind == "ident" and (nxt == "(" or (text in PROMQL_FUNCTIONS and nxt in GROUPING)):
            assert text in PROMQL_FUNCTIONS, "unknown PromQL function %r in %r" % (text, expr)
        elif kind == "ident" and text not in PROMQL_KEYWORDS:
            matchers: Dict[str, Tuple[str, str]] = {}
            if nxt == "{":
                j = i + 2
                while toks[j][1] != "}":
                    j += 1
                body = "".join(t for _k, t in toks[i + 2:j])
                for m in MATCHER.finditer(body):
                    matchers[m.group(1)] = (m.group(2), m.group(3))
                i = j
            out.append((text, matchers))
        i += 1
    return out


def variable_refs(value: object) -> Set[str]:
    """Names of the template variables a JSON value refers to ($x, ${x}, ${x:fmt}, [[x]])."""
    text = json.dumps(value)
    names = set()
    for m in VARIABLE_REF.finditer(text):
        names.add(next(g for g in m.groups() if g))
    return names


def substitute(expr: str, instance: str, domains: List[str]) -> str:
    """The expression as Grafana sends it: All as the job alternation or the datacenter's ``.*``, multi-value
    variables as a regex alternation."""
    out = (expr.replace("$__rate_interval", RATE_INTERVAL).replace("$__interval", INTERVAL)
           .replace("$__range", RANGE).replace("$job", JOB_ALL).replace("$datacenter", DATACENTER_ALL)
           .replace("$instance", instance).replace("$domain", "(" + "|".join(domains) + ")"))
    assert "$" not in out and "[[" not in out, "unsubstituted variable in %r" % out
    return out


def first_load_queries(board: dict) -> int:
    """Queries Grafana runs when the board opens: the targets of panels outside collapsed rows (at most;
    Grafana defers panels below the fold) and one per query variable."""
    panels = sum(len(p.get("targets", [])) for p in board["panels"] if p["type"] != "row")
    variables = sum(1 for v in board["templating"]["list"] if v["type"] == "query")
    return panels + variables


def catalogue_names() -> Set[str]:
    from virt_exporter.catalogue import metric_rows

    return {name for _collector, name, _type, _labels, _help in metric_rows()}


def recording_rules() -> Dict[str, str]:
    """Recorded name → its expression, from alerts/*.rules.yml."""
    rules = {}
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            rules.update((r["record"], r["expr"]) for r in group["rules"] if "record" in r)
    return rules


def recorded_names() -> Set[str]:
    return set(recording_rules())


def exporter_inputs(expr: str) -> Set[str]:
    """The exporter's series an expression reads, through recording rules."""
    rules = recording_rules()
    out = set()
    for name, _matchers in selectors(expr):
        out |= exporter_inputs(rules[name]) if name in rules else {name}
    return out


# --- static checks -----------------------------------------------------------------------------------

def test_both_boards_exist():
    assert {p.name for p in DASHBOARDS} >= {"virt-host.json", "virt-domain.json"}


def test_shipped_boards_are_the_generated_defaults():
    boards = generator.render(MixinConfig())
    assert set(boards) == {p.name for p in DASHBOARDS}
    for name, board in boards.items():
        assert (REPO / "dashboards" / name).read_text(encoding="utf-8") == generator.dump(board), (
            "dashboards/%s is not what virt_exporter.mixin.dashboards renders for the defaults" % name)


def test_knobs_reach_every_query():
    config = parse_config({"job_selector": 'job=~"kvm-.*"', "datacenter_label": "site",
                           "windows": {"disk_latency": "3m"},
                           "dashboards": {"refresh": "1m", "time_from": "now-6h"}})
    exprs = []
    for board in generator.render(config).values():
        variables = {v["name"]: v for v in board["templating"]["list"]}
        assert variables["job"]["query"] == 'label_values(libvirt_up{job=~"kvm-.*"}, job)'
        assert variables["datacenter"]["query"] == 'label_values(libvirt_up{job=~"$job"}, site)'
        assert (board["refresh"], board["time"]["from"]) == ("1m", "now-6h")
        for panel, target in targets(board):
            exprs.append(target["expr"])
            for name, matchers in selectors(target["expr"]):
                assert matchers.get("site") == ("=~", "$datacenter"), (panel["title"], name)
    # a window knob renames the recorded series the rules write, and the boards follow
    assert any("domain:libvirt_disk_read_latency_seconds:mean3m{" in e for e in exprs)
    assert not any(":mean10m" in e for e in exprs)
    without_dc = generator.render(parse_config({"job_selector": 'job="virt"', "datacenter_label": ""}))
    for board in without_dc.values():
        assert "datacenter" not in variable_refs(board)
        for panel, target in targets(board):
            for name, matchers in selectors(target["expr"]):
                assert matchers.get("job") == ("=~", "$job") and "datacenter" not in matchers, (panel["title"], name)


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_json_model(path: Path):
    board = load(path)
    assert board["id"] is None, "an importable dashboard has no database id"
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,40}", board["uid"])
    assert board["title"] and isinstance(board["schemaVersion"], int) and board["schemaVersion"] >= 36
    assert isinstance(board["panels"], list) and board["panels"]
    # Provisioning substitutes no ${DS_...} input: the data source is only ever the datasource variable.
    assert "__inputs" not in board and "DS_PROMETHEUS" not in path.read_text(encoding="utf-8")
    required_panels = {r["id"] for r in board.get("__requires", []) if r["type"] == "panel"}
    assert {p["type"] for p in query_panels(board)} <= required_panels


def test_uids_unique():
    uids = [load(p)["uid"] for p in DASHBOARDS]
    assert len(uids) == len(set(uids))


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_panels_ids_layout_targets(path: Path):
    board = load(path)
    ids = [p["id"] for p in all_panels(board)]
    assert len(ids) == len(set(ids)), "duplicate panel ids"
    titles = [p["title"] for p in query_panels(board)]
    assert len(titles) == len(set(titles)), "duplicate panel titles (NO_DATA_IN_TESTBED names panels by title)"
    # The board as it opens, and each collapsed row's panels as they unfold below its header.
    layers = [board["panels"]] + [[p] + p["panels"] for p in board["panels"] if p.get("collapsed")]
    for layer in layers:
        cells: Dict[Tuple[int, int], str] = {}
        for p in layer:
            g = p["gridPos"]
            assert g["w"] >= 1 and g["h"] >= 1 and 0 <= g["x"] and g["x"] + g["w"] <= 24, p["title"]
            for x in range(g["x"], g["x"] + g["w"]):
                for y in range(g["y"], g["y"] + g["h"]):
                    assert (x, y) not in cells, "%r overlaps %r" % (p["title"], cells[(x, y)])
                    cells[(x, y)] = p["title"]
    for panel in query_panels(board):
        assert panel.get("title"), panel["id"]
        assert panel["datasource"] == DATASOURCE_REF, panel["title"]
        assert panel.get("targets"), "%r has no targets" % panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
        for t in panel["targets"]:
            assert isinstance(t.get("expr"), str) and t["expr"].strip(), \
                "%r/%s has no expr" % (panel["title"], t["refId"])
            assert t["datasource"] == DATASOURCE_REF, (panel["title"], t["refId"])


def test_expression_reader():
    expr = ('sum by (instance) (rate(a_total{instance=~"$instance", x="}"}[$__rate_interval])) '
            '* on (instance, domain) group_left (path) b_info{domain=~"$domain"} or vector(0) > 1e9')
    assert selectors(expr) == [("a_total", {"instance": ("=~", "$instance"), "x": ("=", "}")}),
                               ("b_info", {"domain": ("=~", "$domain")})]
    with pytest.raises(AssertionError):
        selectors("rte(a_total[5m])")


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_metric_names_exist(path: Path):
    known = catalogue_names() | recorded_names() | PROMETHEUS_SCRAPE_SERIES
    unknown = {}
    for panel, target in targets(load(path)):
        names = selectors(target["expr"])
        assert names, "%r/%s reads no metric" % (panel["title"], target["refId"])
        for name, _matchers in names:
            if name not in known:
                unknown.setdefault(name, []).append("%s/%s" % (panel["title"], target["refId"]))
    assert not unknown, ("metrics neither in the exporter's catalogue (python -m virt_exporter.catalogue) nor "
                         "recorded by alerts/*.rules.yml: %s" % json.dumps(unknown, indent=1))


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_only_the_overview_row_expanded(path: Path):
    board = load(path)
    rows = [p for p in board["panels"] if p["type"] == "row"]
    assert board["panels"][0] is rows[0] and rows[0]["title"] == "Overview" and not rows[0]["collapsed"]
    assert all(r["collapsed"] for r in rows[1:]), [r["title"] for r in rows[1:] if not r["collapsed"]]
    assert all(p["type"] == "row" for p in board["panels"][board["panels"].index(rows[1]):])


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_first_load_query_count(path: Path):
    board = load(path)
    count = first_load_queries(board)
    print("%s: %d queries on first load" % (path.name, count))
    assert count <= FIRST_LOAD_QUERIES_MAX
    readme = (REPO / "dashboards" / "README.md").read_text(encoding="utf-8")
    variables = sum(1 for v in board["templating"]["list"] if v["type"] == "query")
    every_row = sum(1 for _t in targets(board)) + variables
    assert re.search(r"`%s` \| %d \| %d \|" % (re.escape(path.name), count, every_row), readme), \
        "dashboards/README.md's query counts are stale"


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_every_selector_filtered_by_the_variables(path: Path):
    for panel, target in targets(load(path)):
        for name, matchers in selectors(target["expr"]):
            wanted = dict(HOST_MATCHERS)
            # On the domain board every series but a host's recorded thresholds is a domain's.
            if path == DOMAIN_BOARD and not name.startswith("instance:"):
                wanted["domain"] = ("=~", "$domain")
            for label, matcher in wanted.items():
                assert matchers.get(label) == matcher, "%r/%s: %s lacks %s%s\"%s\"" % (
                    panel["title"], target["refId"], name, label, *matcher)


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_template_variables(path: Path):
    board = load(path)
    variables = {v["name"]: v for v in board["templating"]["list"]}
    defined = set(variables) | {i["name"] for i in board.get("__inputs", [])}
    used = variable_refs(board["panels"]) | variable_refs(board["templating"]) | variable_refs(board.get("links", []))
    undefined = {n for n in used if n not in defined and not GRAFANA_BUILTINS.match(n)}
    assert not undefined, "template variables used but not defined: %s" % sorted(undefined)

    names = [v["name"] for v in board["templating"]["list"]]
    assert names == ["datasource", "job", "datacenter", "instance"] + (["domain"] if path == DOMAIN_BOARD else [])
    ds = variables["datasource"]
    assert ds["type"] == "datasource" and ds["query"] == "prometheus"
    assert ds["current"] == {"selected": False, "text": "default", "value": "default"}
    for v in board["templating"]["list"][1:]:
        assert v["type"] == "query" and v["datasource"] == DATASOURCE_REF, v["name"]
        assert v["refresh"] == 1, "%s: read when the board loads, not on every time range change" % v["name"]
    assert variables["job"]["query"] == 'label_values(libvirt_up{job="%s"}, job)' % JOB
    dc = variables["datacenter"]
    assert dc["query"] == 'label_values(libvirt_up{job=~"$job"}, datacenter)'
    assert dc["includeAll"] and dc["allValue"] == DATACENTER_ALL  # .* matches a series without the label
    inst = variables["instance"]
    assert inst["query"] == 'label_values(libvirt_up{job=~"$job", datacenter=~"$datacenter"}, instance)'
    # One host: single-select without All, so Grafana selects the first host on load.
    assert not inst["multi"] and not inst["includeAll"] and inst["current"] == {}
    if path == DOMAIN_BOARD:
        dom = variables["domain"]
        assert dom["query"] == ('label_values(libvirt_domain_info{job=~"$job", datacenter=~"$datacenter", '
                                'instance="$instance"}, domain)')


def units(panel: dict) -> Set[str]:
    field = panel["fieldConfig"]
    found = {field["defaults"]["unit"]}
    for o in field["overrides"]:
        found |= {p["value"] for p in o["properties"] if p["id"] == "unit"}
    return found


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_units_scale(path: Path):
    for panel, target in targets(load(path)):
        expr = target["expr"]
        assert not units(panel) & {"MHz", "mhz"}, panel["title"]  # a custom unit Grafana never scales
        if re.search(r"_mhz\b|_mhz:", expr) and "/" not in expr:
            # MHz series in hertz, which Grafana scales to kHz/MHz/GHz.
            assert expr.endswith(" * 1e6") and panel["fieldConfig"]["defaults"]["unit"] == "hertz", panel["title"]
        if re.search(r"rate\([a-z_]*cpu[a-z_]*_seconds_total", expr):
            # CPU seconds per second: a share of one CPU.
            assert panel["fieldConfig"]["defaults"]["unit"] in {"percentunit", "percent"}, panel["title"]


def test_state_reasons_named_as_libvirt_names_them():
    """The State reason panel's mapping against libvirt-python's virDomain<State>Reason constants."""
    libvirt = pytest.importorskip("libvirt")
    states = {"NOSTATE": 0, "RUNNING": 1, "BLOCKED": 2, "PAUSED": 3, "SHUTDOWN": 4, "SHUTOFF": 5, "CRASHED": 6,
              "PMSUSPENDED": 7}
    assert {k: getattr(libvirt, "VIR_DOMAIN_" + k) for k in states} == states
    # VIR_DOMAIN_SHUTDOWN_* also names virDomainShutdownFlagValues; PMSUSPENDED_DISK_* another enum.
    not_reasons = {"SHUTDOWN_DEFAULT", "SHUTDOWN_ACPI_POWER_BTN", "SHUTDOWN_GUEST_AGENT", "SHUTDOWN_INITCTL",
                   "SHUTDOWN_SIGNAL", "SHUTDOWN_PARAVIRT", "PMSUSPENDED_DISK_UNKNOWN"}
    expected = {}
    for const, value in vars(libvirt).items():
        m = re.fullmatch(r"VIR_DOMAIN_(%s)_([A-Z_]+)" % "|".join(states), const)
        if m and isinstance(value, int) and m.group(0)[len("VIR_DOMAIN_"):] not in not_reasons \
                and not m.group(2).endswith("LAST"):
            expected[100 * states[m.group(1)] + value] = m.group(2).replace("_", "").lower()
    panel = next(p for p in query_panels(load(DOMAIN_BOARD)) if p["title"] == "State reason")
    assert [t["expr"] for t in panel["targets"]] == [
        '100 * libvirt_domain_state{%s} + libvirt_domain_state_reason{%s}' % ((
            'job=~"$job", datacenter=~"$datacenter", instance="$instance", domain=~"$domain"',) * 2)]
    (mapping,) = panel["fieldConfig"]["defaults"]["mappings"]
    named = {int(code): o["text"].split(": ", 1)[1] for code, o in mapping["options"].items()}
    normalised = {code: re.sub(r"[ /-]", "", text).lower() for code, text in named.items()}
    # The installed libvirt may predate a reason (VIR_DOMAIN_PAUSED_API_ERROR = 14: libvirt 9.2).
    newer = {314: "apierror"}
    assert {c: n for c, n in normalised.items() if c not in newer or c in expected} == expected
    assert all(normalised[c] == n for c, n in newer.items())
    assert named[305] == "I/O error" and mapping["options"]["305"]["color"] == "red"


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_no_constant_colours_in_physical_units(path: Path):
    for panel in query_panels(load(path)):
        steps = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
        if panel["fieldConfig"]["defaults"]["unit"] in PHYSICAL_UNITS:
            assert len(steps) == 1, "%r colours at a constant %s" % (panel["title"], steps[1:])


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_threshold_series_drawn_as_dashed_lines(path: Path):
    drawn = 0
    for panel, target in targets(load(path)):
        if panel["type"] != "timeseries" or not any("threshold" in n for n, _m in selectors(target["expr"])):
            continue
        if "/" in target["expr"]:
            continue  # a share of the threshold, not the threshold
        dashed = [o for o in panel["fieldConfig"]["overrides"] if o["matcher"]["id"] == "byRegexp"
                  and re.fullmatch(o["matcher"]["options"], target["legendFormat"])
                  and any(p["id"] == "custom.lineStyle" for p in o["properties"])]
        assert dashed, "%r/%s draws a threshold as a plain series" % (panel["title"], target["refId"])
        drawn += 1
    assert drawn >= 3


def test_headroom_coloured_by_the_watermark_limit():
    headroom = next(p for p in query_panels(load(REPO / "dashboards" / "virt-host.json"))
                    if p["title"].startswith("Thin volume headroom"))
    assert [n for n, _m in selectors(headroom["targets"][0]["expr"])] == [
        "libvirt_domain_block_watermark_headroom_bytes", "libvirt_domain_block_watermark_limit_bytes"]


@pytest.mark.prometheus
def test_promtool_parses_every_expression(tmp_path: Path):
    rules = []
    for path in DASHBOARDS:
        for panel, target in targets(load(path)):
            rules.append({"record": "dashboard:panel_%d_%s" % (panel["id"], target["refId"]),
                          "expr": substitute(target["expr"], "127.0.0.1:9177", ["vm1", "vm2"]),
                          "labels": {"board": path.stem}})
    # One group per board: record names repeat across boards.
    groups = {}
    for r in rules:
        groups.setdefault(r["labels"]["board"], []).append(r)
    f = tmp_path / "dashboard-exprs.rules.yml"
    f.write_text(yaml.safe_dump({"groups": [{"name": b, "rules": rs} for b, rs in groups.items()]}))
    promtool("check", "rules", f)


# --- live check --------------------------------------------------------------------------------------

# The VMs' level is crossed by the busy guest (a spinning vCPU): an alarm is sent some 15 s after start,
# after its counter has been scraped at 0, so the perfmon alarm panels (increase() included) show it.
PERFMON_XML = """<perfmon>
  <host><config><variable><name value="cpu_usage"/><alarm_trigger_level value="0.99"/>
    <alarm_trigger_period value="3600"/></variable></config></host>
  <vm><config><variable><name value="cpu_usage"/><alarm_trigger_level value="0.1"/>
    <alarm_trigger_period value="15"/></variable></config></vm>
</perfmon>
"""
NOVA_NS = "http://openstack.org/xmlns/libvirt/nova/1.1"
# Nova's instance metadata as virsh sets it (the root element's namespace is virsh's to add).
NOVA_INSTANCE = ('<instance xmlns:n="%s"><n:name>instance-00000001</n:name><n:flavor name="m1.nano"/>'
                 '<n:owner><n:user uuid="u1">alice</n:user><n:project uuid="p1">demo</n:project></n:owner>'
                 '</instance>' % NOVA_NS)
SCRAPE_INTERVAL = "2s"
FOREIGN_JOB, FOREIGN_DATACENTER = "foreign", "dc-foreign"
FOREIGN_SCRAPE_INTERVAL = "5s"  # the exporter answers both jobs; the second one less often
WARMUP_BOUND_S = 30  # from Prometheus' start: 5 scrapes and the test guests seen
QUERY_BOUND_S = 45   # from Prometheus' start: re-query empty results (a perfmon step, rates over
                     # RATE_INTERVAL, MHz absent for an interval in which some VM started or stopped)


def _get_json(url: str, timeout_s: float = 5.0) -> dict:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as r:
            return json.loads(r.read().decode())
    except urllib.error.HTTPError as e:  # Prometheus answers bad queries with 400 and a JSON error
        return json.loads(e.read().decode())


class Prometheus(Process):
    """A real Prometheus on 127.0.0.1 scraping one target as job virt-exporter and again as a foreign job (same
    instance, a datacenter label), with alerts/*.rules.yml; stopped by its pid."""

    def __init__(self, workdir: Path, target: str) -> None:
        binary = shutil.which("prometheus")
        assert binary, "prometheus not found: scripts/setup.sh installs it (Debian package prometheus)"
        workdir.mkdir(parents=True, exist_ok=True)
        config = {"global": {"scrape_interval": SCRAPE_INTERVAL, "scrape_timeout": SCRAPE_INTERVAL,
                             "evaluation_interval": SCRAPE_INTERVAL},
                  "rule_files": [str(p) for p in RULE_FILES],
                  "scrape_configs": [
                      {"job_name": JOB, "static_configs": [{"targets": [target]}]},
                      {"job_name": FOREIGN_JOB, "scrape_interval": FOREIGN_SCRAPE_INTERVAL,
                       "static_configs": [{"targets": [target], "labels": {"datacenter": FOREIGN_DATACENTER}}]}]}
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.url = "http://127.0.0.1:%d" % free_port()
        argv = [binary, "--config.file=%s" % (workdir / "prometheus.yml"),
                "--storage.tsdb.path=%s" % (workdir / "data"),
                "--web.listen-address=%s" % self.url[len("http://"):]]
        super().__init__("prometheus", argv, workdir / "prometheus.log", self.url + "/-/ready")

    def query(self, expr: str) -> dict:
        return _get_json(self.url + "/api/v1/query?" + urllib.parse.urlencode({"query": expr}))

    def label_values(self, label: str, match: str) -> List[str]:
        out = _get_json(self.url + "/api/v1/label/%s/values?%s" % (label, urllib.parse.urlencode({"match[]": match})))
        assert out["status"] == "success", out
        return out["data"]


def _label_values_query(query: str, substitutions: Dict[str, str]) -> Tuple[str, str]:
    """(label, series selector) of a label_values() variable query, the variables before it substituted."""
    m = re.fullmatch(r"label_values\((.*), *([A-Za-z_]+)\)", query)
    assert m, query
    match = m.group(1)
    for name, value in substitutions.items():
        match = match.replace("$" + name, value)
    assert "$" not in match, match
    return m.group(2), match


def _foreign(result: List[dict]) -> List[dict]:
    return [r["metric"] for r in result if r["metric"].get("job") == FOREIGN_JOB]


def _no_data_reason(board: str, title: str, ref: str) -> Optional[str]:
    return NO_DATA_IN_TESTBED.get((board, title, ref)) or NO_DATA_IN_TESTBED.get((board, title, None))


def test_no_data_list_names_real_panels():
    for board, title, ref in NO_DATA_IN_TESTBED:
        panels = [p for p in query_panels(load(REPO / "dashboards" / board)) if p["title"] == title]
        assert len(panels) == 1, (board, title)
        assert ref is None or ref in {t["refId"] for t in panels[0]["targets"]}, (board, title, ref)


@pytest.mark.libvirt
@pytest.mark.prometheus
def test_every_panel_query_returns_data(testbed, tmp_path: Path):
    t_start = time.monotonic()
    # Guests first: they boot while the exporter and Prometheus come up.
    busy = testbed.make_guest("busy")
    blank = testbed.make_guest("blank")
    # ~10 writes/s of one 64 KiB cluster each for a minute (disk I/O while the queries run), on 128 MiB of
    # block storage: headroom stays above 0 and below the default watermark limit (2 GiB), so the volume
    # "needs extension" and no write runs out of space.
    writer = testbed.make_guest("writer", writer_params=tb.WriterParams(
        stride=128, max_lba=2048 + 128 * 599, wait_us=100_000, capacity_mib=1024, physical_mib=128))
    # 12 writes of a 1 MiB cluster onto 8 MiB of block storage: it runs out at once, QEMU pauses it on
    # the I/O error (werror=enospc), which the paused-domains panel shows.
    full = wb.make_writer(testbed, tb.WriterParams(start_lba=2048, stride=2048, max_lba=2048 + 2048 * 11,
                                                   wait_us=20_000, capacity_mib=1024, physical_mib=8))
    guests = [busy.name, blank.name, writer.name, full.name]
    # The panels the bed can feed: OpenStack identity (Nova metadata on one guest), unresponsive domains
    # (one guest's QEMU stopped once the exporter has seen it), perfmon alarms (PERFMON_XML), a paused
    # domain (above), a write threshold (armed by the test as another client would, far above what the
    # writer writes, so it never fires and stays armed).
    tb.virsh("metadata", blank.name, "--uri", NOVA_NS, "--key", "nova", "--live", "--set", NOVA_INSTANCE)
    tb.virsh("domblkthreshold", writer.name, "vda", str(120 << 20))
    # I/O limits far above what the writer does, pinned vCPU and emulator threads, a storage pool (a
    # transient directory pool of this test's own), the iothread collector switched on below.
    tb.virsh("blkdeviotune", writer.name, "vda", "--live", "--total-bytes-sec", str(1 << 30),
             "--total-iops-sec", "100000", "--total-bytes-sec-max", str(2 << 30), "--total-iops-sec-max", "200000")
    tb.virsh("vcpupin", busy.name, "0", "0", "--live")
    tb.virsh("emulatorpin", busy.name, "0-%d" % (os.cpu_count() - 1), "--live")
    pool = "vet-%d-pool" % os.getpid()
    (tmp_path / "pool").mkdir()
    tb.virsh("pool-create-as", pool, "dir", "--target", str(tmp_path / "pool"))
    stopped: List[int] = []
    perfmon = tmp_path / "perfmon.xml"
    perfmon.write_text(PERFMON_XML)

    exporter = ExporterProcess(["--perfmon.config", str(perfmon), "--perfmon.step", "5", "--collector.iothread"])
    prometheus: Optional[Prometheus] = None
    try:
        exporter.start()
        instance = "127.0.0.1:%d" % exporter.port
        prometheus = prom = Prometheus(tmp_path / "prom", instance)
        prom.start()
        t_prom = time.monotonic()
        deadline = t_prom + WARMUP_BOUND_S

        def left_s() -> float:
            return max(0.0, deadline - time.monotonic())

        wait_for(lambda: any(float(r["value"][1]) >= 5 for r in prom.query(
            'count_over_time(libvirt_up{instance="%s"}[1m])' % instance)["data"]["result"]),
            left_s(), "5 scrapes of the exporter", 0.5)
        domains_seen = 'libvirt_domain_info{instance="%s"}' % instance
        wait_for(lambda: set(guests) <= set(prom.label_values("domain", domains_seen)),
                 left_s(), "the test guests in libvirt_domain_info", 0.5)

        stopped.append(blank.pid)
        os.kill(blank.pid, signal.SIGSTOP)
        wait_for(lambda: prom.query('libvirt_up{job="%s"}' % FOREIGN_JOB)["data"]["result"],
                 left_s(), "the foreign job's first scrape", 0.5)

        # Template variable queries, in order, as Grafana runs label_values(): each sees the values before it.
        for path in DASHBOARDS:
            substitutions = {"job": JOB_ALL, "datacenter": DATACENTER_ALL, "instance": instance}
            expected = {"job": [JOB], "datacenter": [], "instance": [instance]}  # no datacenter label on our job
            for var in load(path)["templating"]["list"]:
                if var["type"] != "query":
                    continue
                label, match = _label_values_query(var["query"], substitutions)
                values = prom.label_values(label, match)
                if var["name"] == "domain":
                    assert set(guests) <= set(values), (path.name, values)
                else:
                    assert values == expected[var["name"]], (path.name, var["name"], values)
        # The foreign job's datacenter is there, for the datacenter variable of a board pointed at that job.
        assert prom.label_values("datacenter", 'libvirt_up{job=~"%s"}' % FOREIGN_JOB) == [FOREIGN_DATACENTER]

        queries = []  # (board, title, refId, expr)
        for path in DASHBOARDS:
            for panel, target in targets(load(path)):
                queries.append((path.name, panel["title"], target["refId"],
                                substitute(target["expr"], instance, guests)))

        errors: List[str] = []
        pending = {q for q in queries if not _no_data_reason(*q[:3])}
        query_deadline = t_prom + QUERY_BOUND_S
        first = True
        while True:
            for q in list(queries if first else pending):
                out = prom.query(q[3])
                if out.get("status") != "success" or out.get("warnings"):
                    errors.append("%s / %s / %s: %s\n    %s" % (q[0], q[1], q[2], out, q[3]))
                    pending.discard(q)
                elif _foreign(out["data"]["result"]):
                    errors.append("%s / %s / %s: series of the foreign job %s\n    %s" % (
                        q[0], q[1], q[2], _foreign(out["data"]["result"])[:2], q[3]))
                    pending.discard(q)
                elif out["data"]["result"]:
                    pending.discard(q)
            first = False
            if errors or not pending or time.monotonic() > query_deadline:
                break
            time.sleep(2)
        assert not errors, "queries failed:\n" + "\n".join(errors)

        print("panel queries answered %.0f s after Prometheus started" % (time.monotonic() - t_prom))
        if pending:
            exposed = {name for name, _labels in Samples.parse(exporter.scrape_text()).values}
            exposed |= PROMETHEUS_SCRAPE_SERIES
            lines = []
            for board, title, ref, expr in sorted(pending):
                missing = sorted(exporter_inputs(expr) - exposed)
                why = ("not exposed by this exporter (collector not enabled/wired?): %s" % ", ".join(missing)
                       if missing else "no matching series")
                lines.append("%s / %s / %s: %s\n    %s" % (board, title, ref, why, expr))
            pytest.fail("panel queries with no data:\n" + "\n".join(lines))
    finally:
        tb.virsh("pool-destroy", pool, check=False)
        for pid in stopped:
            os.kill(pid, signal.SIGCONT)
        if prometheus is not None:
            prometheus.stop()
        exporter.__exit__(None, None, None)  # stops its pid, removes its log
        print("dashboard live check took %.0f s" % (time.monotonic() - t_start))
