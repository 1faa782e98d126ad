"""dashboards/*.json: Grafana JSON that imports, and queries that work against a real Prometheus.

Static checks (no daemons): the JSON model is well formed, panel ids are unique and panels do not
overlap, every target has an expression, every metric an expression reads is one the exporter exposes
(``virt_exporter.catalogue.metric_rows()``) or a recording rule of alerts/*.rules.yml, every selector is
filtered by the board's template variables, and every variable used is defined. promtool parses every
expression.

Live check (libvirtd + Prometheus): the exporter runs against a busy, a blank and a writer guest (thin
qcow2 on a loop block device) with a perfmon config; a real Prometheus scrapes it every 2 s and loads
alerts/*.rules.yml. Every panel's query, with the template variables substituted as Grafana would, must
succeed without warnings and return data — except the few listed in NO_DATA_IN_TESTBED, which only have
data in situations the test bed does not create.
"""

from __future__ import annotations

import json
import re
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Set, Tuple

import pytest
import yaml

import testbed as tb  # tests/ is on sys.path (tests/conftest.py)
from childproc import Process
from exporter import ExporterProcess, Samples, free_port
from promtool import promtool

REPO = Path(__file__).resolve().parents[1]
DASHBOARDS = sorted((REPO / "dashboards").glob("*.json"))
RULE_FILES = sorted((REPO / "alerts").glob("*.rules.yml"))
DOMAIN_BOARD = REPO / "dashboards" / "virt-domain.json"
DATASOURCE_REF = {"type": "prometheus", "uid": "${datasource}"}

# Series Prometheus itself adds to every scrape; a panel may compare them with the exporter's own.
PROMETHEUS_SCRAPE_SERIES = {"up", "scrape_duration_seconds"}

# What Grafana substitutes, as the live check does it (2 s scrapes; a one-minute dashboard range).
RATE_INTERVAL, INTERVAL, RANGE = "10s", "2s", "1m"

# Panels (board file, panel title, refIds or None for all its targets) that have data only in situations
# the test bed does not create; for them the query must only succeed.
NO_DATA_IN_TESTBED: Dict[Tuple[str, str, Optional[str]], str] = {
    ("virt-host.json", "Unresponsive domains", None):
        "only while some domain's QEMU does not answer (a hung guest)",
    ("virt-host.json", "Domains paused on I/O error", None):
        "only after a guest's write failed (e.g. ENOSPC on a full thin volume); the writer never fills its",
    ("virt-host.json", "Perfmon alarms sent in range", None):
        "only after a perfmon alarm was sent; the test's levels are never crossed for a trigger period",
    ("virt-domain.json", "Identity", "B"):
        "libvirt_domain_openstack_info exists only for domains with OpenStack Nova metadata",
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
    ("virt-domain.json", "Guest memory pressure (LibvirtDomainGuestMemoryPressure)", None):
        "needs a balloon driver in the guest OS; test guests run a boot-sector program",
    ("virt-domain.json", "Thin volume headroom vs limit", "C"):
        "a write threshold exists only with --collector.watermark.threshold (read-write libvirt connection)",
    ("virt-domain.json", "Perfmon alarms", None):
        "only after a perfmon alarm was sent; the test's levels are never crossed for a trigger period",
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
    """The expression as Grafana sends it: multi-value variables as a regex alternation."""
    out = (expr.replace("$__rate_interval", RATE_INTERVAL).replace("$__interval", INTERVAL)
           .replace("$__range", RANGE).replace("$instance", instance)
           .replace("$domain", "(" + "|".join(domains) + ")"))
    assert "$" not in out and "[[" not in out, "unsubstituted variable in %r" % out
    return out


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


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_json_model(path: Path):
    board = load(path)
    assert board["id"] is None, "an importable dashboard has no database id"
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,40}", board["uid"])
    assert board["title"] and isinstance(board["schemaVersion"], int) and board["schemaVersion"] >= 36
    assert isinstance(board["panels"], list) and board["panels"]
    inputs = {i["name"]: i for i in board.get("__inputs", [])}
    assert all(i["type"] == "datasource" and i["pluginId"] == "prometheus" for i in inputs.values())
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
    cells: Dict[Tuple[int, int], str] = {}
    for p in all_panels(board):
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
def test_every_selector_filtered_by_the_variables(path: Path):
    wanted = {"instance": ("=~", "$instance")}
    if path == DOMAIN_BOARD:
        wanted["domain"] = ("=~", "$domain")
    for panel, target in targets(load(path)):
        for name, matchers in selectors(target["expr"]):
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

    ds = variables["datasource"]
    assert ds["type"] == "datasource" and ds["query"] == "prometheus"
    inst = variables["instance"]
    assert inst["type"] == "query" and inst["datasource"] == DATASOURCE_REF
    assert inst["query"] == "label_values(libvirt_up, instance)"
    if path == DOMAIN_BOARD:
        dom = variables["domain"]
        assert dom["type"] == "query" and dom["datasource"] == DATASOURCE_REF
        assert re.fullmatch(r'label_values\(libvirt_domain_info(\{instance=~"\$instance"\})?, domain\)', dom["query"])


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

PERFMON_XML = """<perfmon>
  <host><config><variable><name value="cpu_usage"/><alarm_trigger_level value="0.99"/>
    <alarm_trigger_period value="3600"/></variable></config></host>
  <vm><config><variable><name value="cpu_usage"/><alarm_trigger_level value="0.99"/>
    <alarm_trigger_period value="3600"/></variable></config></vm>
</perfmon>
"""
SCRAPE_INTERVAL = "2s"
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
    """A real Prometheus on 127.0.0.1 scraping one target, with alerts/*.rules.yml; stopped by its pid."""

    def __init__(self, workdir: Path, target: str) -> None:
        binary = shutil.which("prometheus")
        assert binary, "prometheus not found: scripts/setup.sh installs it (Debian package prometheus)"
        workdir.mkdir(parents=True, exist_ok=True)
        config = {"global": {"scrape_interval": SCRAPE_INTERVAL, "scrape_timeout": SCRAPE_INTERVAL,
                             "evaluation_interval": SCRAPE_INTERVAL},
                  "rule_files": [str(p) for p in RULE_FILES],
                  "scrape_configs": [{"job_name": "virt", "static_configs": [{"targets": [target]}]}]}
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


def _wait(what: str, predicate, deadline: float, interval_s: float = 0.5):
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for " + what)
        time.sleep(interval_s)


def _label_values_query(query: str, instance: str) -> Tuple[str, str]:
    m = re.fullmatch(r"label_values\((.*), *([A-Za-z_]+)\)", query)
    assert m, query
    return m.group(2), m.group(1).replace("$instance", instance)


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
    guests = [busy.name, blank.name, writer.name]
    perfmon = tmp_path / "perfmon.xml"
    perfmon.write_text(PERFMON_XML)

    exporter = ExporterProcess(["--perfmon.config", str(perfmon), "--perfmon.step", "5"])
    prometheus: Optional[Prometheus] = None
    try:
        exporter.start()
        instance = "127.0.0.1:%d" % exporter.port
        prometheus = prom = Prometheus(tmp_path / "prom", instance)
        prom.start()
        t_prom = time.monotonic()
        deadline = t_prom + WARMUP_BOUND_S
        _wait("5 scrapes of the exporter", lambda: any(float(r["value"][1]) >= 5 for r in prom.query(
            'count_over_time(libvirt_up{instance="%s"}[1m])' % instance)["data"]["result"]), deadline)
        _wait("the test guests in libvirt_domain_info", lambda: set(guests) <= set(prom.label_values(
            "domain", 'libvirt_domain_info{instance="%s"}' % instance)), deadline)

        # Template variable queries, as Grafana runs label_values().
        for path in DASHBOARDS:
            for var in load(path)["templating"]["list"]:
                if var["type"] != "query":
                    continue
                label, match = _label_values_query(var["query"], instance)
                values = prom.label_values(label, match)
                expected = {instance} if label == "instance" else set(guests)
                assert expected <= set(values), (path.name, var["name"], values)

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
        if prometheus is not None:
            prometheus.stop()
        exporter.__exit__(None, None, None)  # stops its pid, removes its log
        print("dashboard live check took %.0f s" % (time.monotonic() - t_start))
