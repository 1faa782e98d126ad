"""The Grafana dashboards (dashboards/*.json), generated from one set of knobs.

``render(cfg)`` returns {file name: dashboard JSON model} for a ``MixinConfig`` (the knobs file of
``virt-exporter mixin``); ``render(MixinConfig())`` is what ships in dashboards/. The knobs it reads:

- ``job_selector`` — PromQL label matcher text that picks the exporter's scrape jobs
  (default ``job="virt-exporter"``). Only the ``job`` variable's query uses it; every panel and every
  other variable then filters by ``job=~"$job"``, so another exporter's ``libvirt_*`` series on the same
  Prometheus never show up.
- ``datacenter_label`` — the target label that names a host's site (default ``datacenter``). It gets a
  ``datacenter`` variable (All = ``.*``, which also matches series without the label, so the boards
  work where no target carries it) and a ``=~"$datacenter"`` matcher in every query. Empty: no
  variable and no matcher.
- ``dashboards`` — the boards' own knobs (``config.DASHBOARD_KNOBS``): ``refresh`` (auto-refresh
  interval), ``time_from`` (start of the default time range, relative to now), ``datasource`` (the data
  source the ``datasource`` variable starts on; ``default`` is Grafana's default data source),
  ``timezone``.

``dump(board)`` is a board's file text as it ships (two-space JSON, a final newline).

Panels are written once below with markers in their strings, replaced when a board is built: ``@H`` is
the host selector (job, datacenter, instance), ``@V`` the domain selector (the host's plus ``domain``),
``@Q`` the variables a link to the other board carries. The host is a single-select variable (Grafana
selects the first host on load); only the overview row of each board starts expanded, so a board's
first load runs few queries. No ``${DS_...}`` input: every panel uses the ``datasource`` variable, so
a file imported in the UI and one provisioned from disk behave the same.
"""

from __future__ import annotations

import copy
import json
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from .config import MixinConfig
from .rules import guest_series

HOST_UID, DOMAIN_UID = "virt-exporter-host", "virt-exporter-domain"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
GRID_WIDTH = 24
Section = Tuple[str, bool, List[dict]]

PANEL_NAMES = {
    "bargauge": "Bar gauge",
    "gauge": "Gauge",
    "stat": "Stat",
    "state-timeline": "State timeline",
    "table": "Table",
    "timeseries": "Time series",
}


# --- building blocks -----------------------------------------------------------------------------------


def merge(base: dict, patch: Mapping[str, Any]) -> dict:
    """base with patch laid over it: dicts merge key by key, anything else replaces."""
    out = copy.deepcopy(base)
    for key, value in patch.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def steps(*pairs: Tuple[str, Optional[float]]) -> dict:
    """Absolute thresholds: (colour, from value) pairs, the first from None (-inf)."""
    return {"mode": "absolute", "steps": [{"color": c, "value": v} for c, v in pairs]}


def value_map(names: Mapping[int, Tuple[str, str]]) -> List[dict]:
    """A value mapping {code: (text, colour)}."""
    options = {
        str(code): {"text": text, "color": colour, "index": i} for i, (code, (text, colour)) in enumerate(names.items())
    }
    return [{"type": "value", "options": options}]


# virDomainState and, per state, its virDomain<State>Reason enum (libvirt-domain.h): code → name.
DOMAIN_STATES: Dict[int, Tuple[str, str, Dict[int, str]]] = {
    0: ("no state", "gray", {0: "unknown"}),
    1: ("running", "green", {
        0: "unknown", 1: "booted", 2: "migrated", 3: "restored", 4: "from snapshot", 5: "unpaused",
        6: "migration canceled", 7: "save canceled", 8: "wakeup", 9: "crashed", 10: "post-copy",
        11: "post-copy failed"}),
    2: ("blocked", "yellow", {0: "unknown"}),
    3: ("paused", "orange", {
        0: "unknown", 1: "user", 2: "migration", 3: "save", 4: "dump", 5: "I/O error", 6: "watchdog",
        7: "from snapshot", 8: "shutting down", 9: "snapshot", 10: "crashed", 11: "starting up", 12: "post-copy",
        13: "post-copy failed", 14: "API error"}),
    4: ("shutting down", "yellow", {0: "unknown", 1: "user"}),
    5: ("shut off", "gray", {
        0: "unknown", 1: "shutdown", 2: "destroyed", 3: "crashed", 4: "migrated", 5: "saved", 6: "failed",
        7: "from snapshot", 8: "daemon"}),
    6: ("crashed", "red", {0: "unknown", 1: "panicked"}),
    7: ("pmsuspended", "blue", {0: "unknown"}),
}
# Reasons that mean trouble whatever the state's own colour says.
ALARMING_REASONS = {(1, 11), (3, 5), (3, 10), (3, 13), (3, 14), (5, 3), (5, 6)}


def state_mappings() -> List[dict]:
    """libvirt_domain_state codes named."""
    return value_map({code: (name, colour) for code, (name, colour, _reasons) in DOMAIN_STATES.items()})


def reason_mappings() -> List[dict]:
    """Codes 100 x state + reason named "state: reason" (a reason code alone means nothing without its state)."""
    return value_map({
        100 * state + reason: ("%s: %s" % (name, why), "red" if (state, reason) in ALARMING_REASONS else colour)
        for state, (name, colour, reasons) in DOMAIN_STATES.items() for reason, why in reasons.items()})


def override(matcher: str, options: str, **properties: Any) -> dict:
    """Field override; properties by Grafana id with dots as double underscores (custom__fillOpacity)."""
    return {
        "matcher": {"id": matcher, "options": options},
        "properties": [{"id": k.replace("__", "."), "value": v} for k, v in properties.items()],
    }


def fixed(colour: str) -> dict:
    return {"mode": "fixed", "fixedColor": colour}


DASH = {"fill": "dash", "dash": [10, 10]}


def dashed(regex: str, colour: Optional[str] = None, **more: Any) -> dict:
    """A reference line (a threshold or a capacity): dashed, unfilled, optionally in one colour."""
    props: Dict[str, Any] = {"custom__lineStyle": DASH, "custom__fillOpacity": 0, **more}
    if colour:
        props["color"] = fixed(colour)
    return override("byRegexp", regex, **props)


def q(expr: str, legend: str) -> dict:
    """A range query (a time series)."""
    return {"expr": expr, "legendFormat": legend, "instant": False, "range": True}


def now(expr: str, legend: str) -> dict:
    """An instant query (a stat, a gauge, a bar)."""
    return {"expr": expr, "legendFormat": legend, "instant": True, "range": False}


def rows(expr: str) -> dict:
    """An instant query as table rows, one per series, its labels as columns."""
    return {"expr": expr, "legendFormat": "__auto", "instant": True, "range": False, "format": "table"}


def organize(
    exclude: Sequence[str] = (), rename: Optional[Mapping[str, str]] = None, merged: bool = True
) -> List[dict]:
    """Table transformations: merge the queries' frames, hide the bookkeeping columns, rename."""
    options: Dict[str, Any] = {"excludeByName": {k: True for k in ("Time", "__name__", "job", *exclude)}}
    if rename is not None:
        options["indexByName"] = {}
        options["renameByName"] = dict(rename)
    out = [{"id": "merge", "options": {}}] if merged else []
    return out + [{"id": "organize", "options": options}]


_REDUCE = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}}
BASE_OPTIONS: Dict[str, dict] = {
    "stat": {
        **_REDUCE,
        "colorMode": "value",
        "graphMode": "none",
        "justifyMode": "auto",
        "orientation": "auto",
        "textMode": "auto",
    },
    "gauge": {**_REDUCE, "showThresholdLabels": False, "showThresholdMarkers": True},
    "bargauge": {**_REDUCE, "displayMode": "gradient", "orientation": "horizontal", "showUnfilled": True},
    "table": {"showHeader": True, "cellHeight": "sm", "footer": {"show": False, "reducer": ["sum"], "fields": ""}},
    "timeseries": {
        "legend": {"displayMode": "table", "placement": "bottom", "showLegend": True, "calcs": ["lastNotNull", "max"]},
        "tooltip": {"mode": "multi", "sort": "desc"},
    },
    "state-timeline": {
        "mergeValues": True,
        "showValue": "never",
        "alignValue": "left",
        "rowHeight": 0.8,
        "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
        "tooltip": {"mode": "single", "sort": "none"},
    },
}
TIMESERIES_CUSTOM = {
    "drawStyle": "line",
    "lineWidth": 1,
    "fillOpacity": 10,
    "showPoints": "never",
    "spanNulls": False,
    "axisPlacement": "auto",
    "axisSoftMin": 0,
    "stacking": {"mode": "none", "group": "A"},
}


def panel(
    kind: str,
    title: str,
    description: str,
    size: Tuple[int, int],
    targets: Sequence[dict],
    unit: str = "short",
    defaults: Optional[Mapping[str, Any]] = None,
    options: Optional[Mapping[str, Any]] = None,
    overrides: Sequence[dict] = (),
    transformations: Sequence[dict] = (),
) -> dict:
    """One panel; size is (width, height) in grid units, its place and id are set by the board."""
    field: Dict[str, Any] = {
        "unit": unit,
        "mappings": [],
        "thresholds": steps(("green", None)),
        "color": {"mode": "thresholds"},
    }
    if kind == "timeseries":
        field["color"] = {"mode": "palette-classic"}
        field["custom"] = copy.deepcopy(TIMESERIES_CUSTOM)
    out: Dict[str, Any] = {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "gridPos": {"w": size[0], "h": size[1]},
        "fieldConfig": {"defaults": merge(field, defaults or {}), "overrides": list(overrides)},
        "options": merge(BASE_OPTIONS[kind], options or {}),
        "targets": [
            {"datasource": DATASOURCE, "editorMode": "code", "refId": chr(ord("A") + i), **t}
            for i, t in enumerate(targets)
        ],
    }
    if transformations:
        out["transformations"] = list(transformations)
    return out


def row(title: str, panels: Sequence[dict], collapsed: bool = True) -> Tuple[str, bool, List[dict]]:
    return title, collapsed, list(panels)


def layout(sections: Sequence[Tuple[str, bool, List[dict]]]) -> List[dict]:
    """Rows and their panels with ids and grid positions: panels flow left to right, a new line when the
    next one does not fit. A collapsed row keeps its panels inside it, placed as if expanded there."""
    out: List[dict] = []
    next_id, y = 1, 0
    for title, collapsed, panels in sections:
        header = {
            "type": "row",
            "id": next_id,
            "title": title,
            "collapsed": collapsed,
            "gridPos": {"h": 1, "w": GRID_WIDTH, "x": 0, "y": y},
            "panels": [],
        }
        next_id += 1
        out.append(header)
        x, line_y, line_h = 0, y + 1, 0
        placed = []
        for p in panels:
            p = copy.deepcopy(p)
            w, h = p["gridPos"]["w"], p["gridPos"]["h"]
            if x + w > GRID_WIDTH:
                x, line_y, line_h = 0, line_y + line_h, 0
            p["id"] = next_id
            next_id += 1
            p["gridPos"] = {"h": h, "w": w, "x": x, "y": line_y}
            x, line_h = x + w, max(line_h, h)
            placed.append(dict(id=p.pop("id"), **p))
        if collapsed:
            header["panels"] = placed
            y += 1
        else:
            out.extend(placed)
            y = line_y + line_h
    return out


def _markers(config: Mapping[str, Any]) -> Dict[str, str]:
    """What the panels' markers stand for: @H the host selector, @V the domain selector, @Q the variables a
    link to the other board carries besides host and domain; @S:<key> a recorded series of rules.guest_series."""
    matchers, params = ['job=~"$job"'], ["${job:queryparam}"]
    if config["datacenter_label"]:
        matchers.append('%s=~"$datacenter"' % config["datacenter_label"])
        params.append("${datacenter:queryparam}")
    matchers.append('instance="$instance"')
    host = ", ".join(matchers)
    out = {"@V": host + ', domain=~"$domain"', "@H": host, "@Q": "".join("&" + p for p in params)}
    # the recorded series whose names carry their window (the windows knobs)
    out.update(("@S:" + key, name) for key, name in config["series"].items())
    return out


def _expand(value: Any, markers: Mapping[str, str]) -> Any:
    """value with every marker replaced, in strings at any depth."""
    if isinstance(value, str):
        for marker, text in markers.items():
            value = value.replace(marker, text)
        return value
    if isinstance(value, list):
        return [_expand(v, markers) for v in value]
    if isinstance(value, dict):
        return {k: _expand(v, markers) for k, v in value.items()}
    return value


def against_threshold(title: str, description: str, series: Sequence[dict], threshold: dict,
                      unit: str, overrides: Sequence[dict] = ()) -> dict:
    """A time series panel with an alert's threshold series drawn as a dashed red line."""
    return timeseries(title, description, (12, 8), [*series, threshold], unit=unit,
                      overrides=[*overrides, dashed(".*threshold$", "red")])


def stat(*args: Any, **kwargs: Any) -> dict:
    return panel("stat", *args, **kwargs)


def gauge(*args: Any, **kwargs: Any) -> dict:
    return panel("gauge", *args, **kwargs)


def bargauge(*args: Any, **kwargs: Any) -> dict:
    return panel("bargauge", *args, **kwargs)


def table(*args: Any, **kwargs: Any) -> dict:
    return panel("table", *args, **kwargs)


def timeseries(*args: Any, **kwargs: Any) -> dict:
    return panel("timeseries", *args, **kwargs)


def state_timeline(*args: Any, **kwargs: Any) -> dict:
    return panel("state-timeline", *args, **kwargs)


# --- the boards' panels --------------------------------------------------------------------------------

_HOST_OVERVIEW = [
    stat(
        "libvirt up",
        ("libvirt_up: 1 when this scrape's libvirt calls succeeded. 0 means the exporter answers but cannot "
         "reach libvirtd (see its log); it reconnects with backoff. LibvirtDown fires when it stays 0 for 5 "
         "minutes."),
        (4, 4),
        [
            now("libvirt_up{@H}", "{{instance}}"),
        ],
        defaults={"mappings": value_map({0: ("down", "red"), 1: ("up", "green")})},
    ),
    stat(
        "Domains by state",
        ("Domains libvirt knows on the host, by virDomainState (libvirt_domain_state). Defined but shut-off "
         "domains count as shut off."),
        (10, 4),
        [
            now("count(libvirt_domain_state{@H} == 1) or vector(0)", "running"),
            now("count(libvirt_domain_state{@H} == 3) or vector(0)", "paused"),
            now("count(libvirt_domain_state{@H} == 5) or vector(0)", "shut off"),
            now("count(libvirt_domain_state{@H} == 6) or vector(0)", "crashed"),
            now(("count(libvirt_domain_state{@H} == 0 or libvirt_domain_state{@H} == 2 or "
                 "libvirt_domain_state{@H} == 4 or libvirt_domain_state{@H} == 7) or vector(0)"), "other"),
        ],
        options={"colorMode": "none", "textMode": "value_and_name"},
        overrides=[
            override("byName", "paused", color=fixed("orange")),
            override("byName", "crashed", color=fixed("red")),
        ],
    ),
    stat(
        "Unresponsive now",
        ("Domains the exporter left out of (or could not complete in) the last scrape because their QEMU "
         "did not answer (libvirt_exporter_domain_unresponsive). Every other domain is still sampled. Check "
         "them with virsh domstats."),
        (4, 4),
        [
            now(("count by (instance) (libvirt_exporter_domain_unresponsive{@H} == 1) or sum by (instance) (0 "
                 "* libvirt_up{@H})"), "{{instance}}"),
        ],
        defaults={"thresholds": steps(("green", None), ("red", 1))},
    ),
    stat(
        "libvirt reconnects",
        ("Times the exporter reconnected to libvirtd in the selected range "
         "(libvirt_exporter_libvirt_reconnects_total): libvirtd restarts or lost connections."),
        (6, 4),
        [
            now("increase(libvirt_exporter_libvirt_reconnects_total{@H}[$__range])", "{{instance}}"),
        ],
        defaults={"thresholds": steps(("green", None), ("orange", 1)), "decimals": 0},
    ),
    gauge(
        "Load of the overload threshold",
        ("instance:libvirt_cpu_total_mhz:sum / instance:libvirt_cpu_overload_threshold:mhz: 100 % is where "
         "LibvirtHostCpuOverload starts counting its 5 minutes."),
        (6, 8),
        [
            now("instance:libvirt_cpu_total_mhz:sum{@H} / instance:libvirt_cpu_overload_threshold:mhz{@H}",
                "{{instance}}"),
        ],
        unit="percentunit",
        defaults={"thresholds": steps(("green", None), ("orange", 0.8), ("red", 1)), "min": 0, "max": 1.25},
    ),
    timeseries(
        "Host CPU: capacity, usage and overload threshold",
        ("Capacity = logical CPUs x core MHz. Host busy = /proc/stat user+nice+system share of capacity. "
         "VMs + overhead = instance:libvirt_cpu_total_mhz:sum (alerts/cpu.rules.yml), which "
         "LibvirtHostCpuOverload compares with the overload threshold line "
         "(instance:libvirt_cpu_overload_threshold:mhz; the factor lives only in that rule)."),
        (18, 8),
        [
            q("libvirt_host_cpu_capacity_mhz{@H} * 1e6", "capacity"),
            q("instance:libvirt_cpu_overload_threshold:mhz{@H} * 1e6", "overload threshold"),
            q("libvirt_host_cpu_usage_mhz{@H} * 1e6", "host busy"),
            q("instance:libvirt_cpu_total_mhz:sum{@H} * 1e6", "VMs + overhead"),
        ],
        unit="hertz",
        defaults={"custom": {"fillOpacity": 0}},
        overrides=[dashed(".*capacity$", "dark-blue"), dashed(".*overload threshold$", "red")],
    ),
]

_HOST_EXPORTER_HEALTH = [
    state_timeline(
        "Collector success",
        ("libvirt_exporter_collector_success per collector: 0 when the collector failed or had no libvirt "
         "data in that scrape; the scrape goes on without it. LibvirtExporterCollectorFailing fires when a "
         "collector stays failed for 15 minutes while libvirt answers."),
        (12, 8),
        [
            q("libvirt_exporter_collector_success{@H}", "{{collector}}"),
        ],
        defaults={
            "mappings": value_map({0: ("failed", "red"), 1: ("ok", "green")}),
            "thresholds": steps(("red", None), ("green", 1)),
        },
    ),
    timeseries(
        "Collector duration",
        ("Time each collector took to build its metrics, per scrape "
         "(libvirt_exporter_collector_duration_seconds)."),
        (12, 8),
        [
            q("libvirt_exporter_collector_duration_seconds{@H}", "{{collector}}"),
        ],
        unit="s",
    ),
    timeseries(
        "Bulk stats and scrape duration",
        ("The bare libvirt bulk stats time behind each scrape "
         "(libvirt_exporter_bulk_stats_duration_seconds) against Prometheus' whole scrape duration: when "
         "the two are close libvirt is the slow part, otherwise the exporter."),
        (12, 8),
        [
            q("libvirt_exporter_bulk_stats_duration_seconds{@H}", "libvirt bulk stats"),
            q("scrape_duration_seconds{@H}", "whole scrape"),
            q("libvirt_exporter_sample_age_seconds{@H}", "sample age"),
        ],
        unit="s",
    ),
    timeseries(
        "Unresponsive domains",
        ("1 per domain excluded as stuck (libvirt_exporter_domain_unresponsive); empty while every domain "
         "answers. LibvirtDomainUnresponsive fires for a domain flagged for 5 minutes."),
        (6, 8),
        [
            q("libvirt_exporter_domain_unresponsive{@H} == 1", "{{domain}}"),
        ],
        defaults={"custom": {"drawStyle": "points", "pointSize": 6}},
    ),
    bargauge(
        "Collector errors in range",
        ("Scrapes in which a collector raised an error, over the selected range "
         "(libvirt_exporter_collector_errors_total); the exporter logs each one."),
        (6, 8),
        [
            now("sum by (instance, collector) (increase(libvirt_exporter_collector_errors_total{@H}[$__range]))",
                "{{collector}}"),
        ],
        defaults={"thresholds": steps(("green", None), ("red", 1)), "decimals": 0},
    ),
]

_HOST_CPU = [
    timeseries(
        "Where the CPU goes: VMs and hypervisor overhead",
        ("Stacked, in hertz: the VMs (sum of libvirt_domain_cpu_usage_mhz, Neat's per-VM MHz) and the "
         "hypervisor overhead (host busy minus the VMs, libvirt_host_hypervisor_overhead_mhz; absent for an "
         "interval in which a VM started, stopped or did not answer). The dashed line is the overload "
         "threshold."),
        (12, 9),
        [
            q("sum by (instance) (libvirt_domain_cpu_usage_mhz{@H}) * 1e6", "VMs"),
            q("libvirt_host_hypervisor_overhead_mhz{@H} * 1e6", "hypervisor overhead"),
            q("instance:libvirt_cpu_overload_threshold:mhz{@H} * 1e6", "overload threshold"),
        ],
        unit="hertz",
        defaults={"custom": {"fillOpacity": 40, "stacking": {"mode": "normal"}}},
        overrides=[dashed(".*overload threshold$", "red", custom__stacking={"mode": "none", "group": "A"})],
    ),
    bargauge(
        "Top VMs by CPU frequency used",
        ("The ten VMs using the most CPU now, in hertz (libvirt_domain_cpu_usage_mhz x 10^6 = core frequency x "
         "cpu.time rate). A bar opens the domain board for that VM."),
        (8, 9),
        [
            now("topk(10, libvirt_domain_cpu_usage_mhz{@H}) * 1e6", "{{domain}}"),
        ],
        unit="hertz",
        defaults={
            "color": {"mode": "continuous-GrYlRd"},
            "min": 0,
            "links": [{
                "title": "Open ${__field.labels.domain} in the domain drill-down",
                "targetBlank": False,
                "url": "/d/%s/libvirt-kvm-domain?${datasource:queryparam}@Q&var-instance=${__field.labels.instance}"
                       "&var-domain=${__field.labels.domain}&${__url_time_range}" % DOMAIN_UID,
            }],
        },
    ),
    stat(
        "Capacity",
        ("libvirt_host_cpu_capacity_mhz (logical CPUs x core frequency) and the core frequency "
         "(libvirt_host_cpu_core_mhz, from virNodeGetInfo), in hertz."),
        (4, 9),
        [
            now("libvirt_host_cpu_capacity_mhz{@H} * 1e6", "capacity"),
            now("libvirt_host_cpu_core_mhz{@H} * 1e6", "per core"),
        ],
        unit="hertz",
        options={"colorMode": "none", "textMode": "value_and_name"},
    ),
]

_HOST_MEMORY_AND_NUMA = [
    timeseries(
        "Host memory",
        ("Host total and free memory from getMemoryStats (libvirt_host_memory_bytes / _free_bytes), and the "
         "memory the balloons currently give the VMs (sum of libvirt_domain_memory_current_bytes)."),
        (12, 8),
        [
            q("libvirt_host_memory_bytes{@H}", "total"),
            q("libvirt_host_memory_bytes{@H} - libvirt_host_memory_free_bytes{@H}", "used"),
            q("libvirt_host_memory_free_bytes{@H}", "free"),
            q("sum by (instance) (libvirt_domain_memory_current_bytes{@H})", "assigned to VMs"),
        ],
        unit="bytes",
        overrides=[dashed(".*total$")],
    ),
    timeseries(
        "NUMA cells: memory, free, VM-resident",
        ("Per host cell: total and free memory (getMemoryStats(cell), libvirt_host_numa_cell_memory_bytes / "
         "_free_bytes; cells need not add up to the host total) and the VMs' resident memory on the cell "
         "(sum of libvirt_domain_numa_memory_bytes, from numa_maps)."),
        (8, 8),
        [
            q("libvirt_host_numa_cell_memory_bytes{@H}", "cell {{cell}} total"),
            q("libvirt_host_numa_cell_memory_free_bytes{@H}", "cell {{cell}} free"),
            q("sum by (instance, cell) (libvirt_domain_numa_memory_bytes{@H})", "cell {{cell}} VMs"),
        ],
        unit="bytes",
        overrides=[dashed(".*total$")],
    ),
    table(
        "NUMA cells",
        "Logical CPUs (capabilities topology) and free share of every host cell.",
        (4, 8),
        [
            rows("libvirt_host_numa_cell_cpus{@H}"),
            rows("libvirt_host_numa_cell_memory_free_bytes{@H} / libvirt_host_numa_cell_memory_bytes{@H}"),
        ],
        overrides=[override("byName", "free", unit="percentunit")],
        transformations=organize(rename={"Value #A": "CPUs", "Value #B": "free"}),
    ),
]

_HOST_THIN_PROVISIONED_DISKS = [
    table(
        "Thin volumes needing extension",
        ("Chunked volumes (qcow2 on block storage) whose headroom (physical - allocation) is below the "
         "watermark limit, i.e. vdsm would extend them now (libvirt_domain_block_extension_needed == 1). "
         "LibvirtVolumeExtensionNeeded fires after 2 minutes of this."),
        (10, 8),
        [
            rows(("libvirt_domain_block_watermark_headroom_bytes{@H} and on (instance, domain, target, "
                  "backing_index) (libvirt_domain_block_extension_needed{@H} == 1)")),
            rows(("libvirt_domain_block_watermark_limit_bytes{@H} and on (instance, domain, target, "
                  "backing_index) (libvirt_domain_block_extension_needed{@H} == 1)")),
            rows(("libvirt_domain_block_physical_bytes{@H} and on (instance, domain, target, backing_index) "
                  "(libvirt_domain_block_extension_needed{@H} == 1)")),
            rows(("libvirt_domain_block_watermark_next_size_bytes{@H} and on (instance, domain, target, "
                  "backing_index) (libvirt_domain_block_extension_needed{@H} == 1)")),
        ],
        unit="bytes",
        transformations=organize(
            rename={"Value #A": "headroom", "Value #B": "limit", "Value #C": "physical", "Value #D": "extend to"}
        ),
    ),
    bargauge(
        "Thin volume headroom in watermark limits (lowest 10)",
        ("The ten chunked volumes with the least headroom (physical - allocation; negative after a write past "
         "the end) as a share of their watermark limit: libvirt_domain_block_watermark_headroom_bytes / "
         "libvirt_domain_block_watermark_limit_bytes. Under 100 % (red) the headroom is below the limit and vdsm "
         "would extend the volume now; the table beside it gives the bytes."),
        (8, 8),
        [
            now("bottomk(10, libvirt_domain_block_watermark_headroom_bytes{@H} / "
                "libvirt_domain_block_watermark_limit_bytes{@H})", "{{domain}} {{target}} {{backing_index}}"),
        ],
        unit="percentunit",
        defaults={"thresholds": steps(("red", None), ("green", 1))},
    ),
    table(
        "Domains paused on I/O error",
        ("Domains paused by an I/O error (libvirt_domain_state 3 with libvirt_domain_state_reason 5) — with "
         "the default error policy, what a guest writing past the end of a full thin volume (ENOSPC) "
         "becomes. Extend the volume, then resume the domain. LibvirtDomainPausedOnIOError fires after a "
         "minute."),
        (6, 8),
        [
            rows(("libvirt_domain_state{@H} == 3 and on (instance, domain) (libvirt_domain_state_reason{@H} "
                  "== 5)")),
        ],
        transformations=organize(exclude=("Value",), merged=False),
    ),
]

_HOST_PERFMON_ALARMS = [
    table(
        "Perfmon alarms sent in range",
        ("Alarms the perfmon engine sent over the selected range, per object and variable "
         "(libvirt_perfmon_alarms_total; needs --perfmon.config). Each one is a PerfmonAlarm notification."),
        (12, 8),
        [
            rows(("sum by (instance, object, domain, variable, priority) "
                  "(increase(libvirt_perfmon_alarms_total{@H}[$__range])) > 0")),
            rows(("1000 * max by (instance, object, domain, variable, priority) "
                  "(libvirt_perfmon_last_alarm_timestamp_seconds{@H})")),
        ],
        defaults={"decimals": 0},
        overrides=[override("byName", "last alarm", unit="dateTimeAsIso")],
        transformations=[{"id": "merge", "options": {}},
                         {"id": "filterByValue",
                          "options": {"type": "include",
                                      "match": "any",
                                      "filters": [{"fieldName": "Value #A",
                                                   "config": {"id": "greater", "options": {"value": 0}}}]}},
                         {"id": "organize",
                          "options": {"excludeByName": {"Time": True},
                                      "renameByName": {"Value #A": "alarms", "Value #B": "last alarm"}}}],
    ),
    timeseries(
        "Perfmon: host variables, value vs level",
        ("The host object's consolidated perfmon values (libvirt_perfmon_value) and their "
         "alarm_trigger_level (dashed)."),
        (8, 8),
        [
            q("libvirt_perfmon_value{@H, object=\"host\"}", "{{variable}}"),
            q("libvirt_perfmon_trigger_level{@H, object=\"host\"}", "{{variable}} level"),
        ],
        overrides=[dashed(".* level$")],
    ),
    stat(
        "Perfmon config errors",
        ("Objects whose perfmon XML was rejected (libvirt_perfmon_config_errors; the last valid config "
         "stays in force) and failed engine steps in range."),
        (4, 8),
        [
            now("libvirt_perfmon_config_errors{@H}", "rejected configs"),
            now("increase(libvirt_perfmon_step_failures_total{@H}[$__range])", "failed steps"),
        ],
        defaults={"thresholds": steps(("green", None), ("red", 1)), "decimals": 0},
        options={"orientation": "horizontal", "textMode": "value_and_name"},
    ),
]

_HOST_DECISIONS_ALERT_RULES = [
    timeseries(
        "Overcommit: vCPUs and memory",
        ("Σ vCPUs of running domains / logical CPUs (instance:libvirt_vcpu_overcommit:ratio) and Σ maximum "
         "memory / host memory (instance:libvirt_memory_overcommit:ratio): capacity planning."),
        (12, 8),
        [
            q("instance:libvirt_vcpu_overcommit:ratio{@H}", "vCPUs"),
            q("instance:libvirt_memory_overcommit:ratio{@H}", "memory"),
        ],
        unit="percentunit",
    ),
    against_threshold(
        "Host memory free vs LibvirtHostMemoryLow",
        ("Free share of the host's memory (instance:libvirt_memory_free:ratio) and the threshold under "
         "which LibvirtHostMemoryLow fires after 10 minutes (instance:libvirt_memory_low_threshold:ratio)."),
        [
            q("instance:libvirt_memory_free:ratio{@H}", "free"),
        ],
        q("instance:libvirt_memory_low_threshold:ratio{@H}", "threshold"),
        unit="percentunit",
    ),
    against_threshold(
        "CPU utilization vs LibvirtHostUnderloaded",
        ("Neat's host utilization, (Σ VM MHz + overhead) / capacity "
         "(instance:libvirt_cpu_utilization:ratio), its 10-minute average "
         "(instance:libvirt_cpu_utilization:avg) and the underload threshold at or under which "
         "LibvirtHostUnderloaded fires while the host runs VMs."),
        [
            q("instance:libvirt_cpu_utilization:ratio{@H}", "utilization"),
            q("instance:libvirt_cpu_utilization:avg{@H}", "10-minute average"),
        ],
        q("instance:libvirt_cpu_underload_threshold:ratio{@H}", "underload threshold"),
        unit="percentunit",
    ),
    bargauge(
        "Migration time estimates (LibvirtMigrationCandidate)",
        ("Estimated live-migration time per VM, memory / "
         "instance:libvirt_migration_bandwidth:bytes_per_second "
         "(domain:libvirt_migration_time_seconds:estimate), shortest first: while the host is overloaded, "
         "LibvirtMigrationCandidate names the VM with the least memory (ties: the most MHz)."),
        (12, 8),
        [
            now("bottomk(10, domain:libvirt_migration_time_seconds:estimate{@H})", "{{domain}}"),
        ],
        unit="s",
        options={"displayMode": "basic"},
    ),
]

_HOST_STORAGE_POOLS = [
    timeseries(
        "Storage pool usage",
        ("Share of each pool allocated to volumes (libvirt_storage_pool_allocation_bytes / "
         "libvirt_storage_pool_capacity_bytes), as of libvirt's last refresh of the pool."),
        (12, 8),
        [
            q("libvirt_storage_pool_allocation_bytes{@H} / libvirt_storage_pool_capacity_bytes{@H}", "{{pool}}"),
        ],
        unit="percentunit",
    ),
    table(
        "Storage pools",
        "Every pool: type and state (libvirt_storage_pool_info), capacity and available bytes.",
        (12, 8),
        [
            rows("libvirt_storage_pool_info{@H}"),
            rows("libvirt_storage_pool_capacity_bytes{@H}"),
            rows("libvirt_storage_pool_available_bytes{@H}"),
        ],
        unit="bytes",
        transformations=organize(exclude=("Value #A",), rename={"Value #B": "capacity", "Value #C": "available"}),
    ),
]

_HOST_JOBS = [
    timeseries(
        "Jobs ended (LibvirtDomainJobFailed)",
        ("Domain jobs ended on the host per operation and outcome, over the dashboard's rate interval "
         "(libvirt_domain_jobs_completed_total, --collector.job); failed and cancelled ones fire "
         "LibvirtDomainJobFailed. Per host: the counter carries no domain."),
        (24, 8),
        [
            q("sum by (instance, operation, outcome) "
              "(increase(libvirt_domain_jobs_completed_total{@H}[$__rate_interval]))",
              "{{instance}} {{operation}} {{outcome}}"),
        ],
        defaults={"custom": {"drawStyle": "bars"}},
    ),
]


def _host_rows() -> List[Section]:
    return [
        row("Overview", _HOST_OVERVIEW, collapsed=False),
        row("Exporter health", _HOST_EXPORTER_HEALTH),
        row("CPU", _HOST_CPU),
        row("Memory and NUMA", _HOST_MEMORY_AND_NUMA),
        row("Thin-provisioned disks", _HOST_THIN_PROVISIONED_DISKS),
        row("Storage pools", _HOST_STORAGE_POOLS),
        row("Jobs", _HOST_JOBS),
        row("Perfmon alarms", _HOST_PERFMON_ALARMS),
        row("Decisions (alert rules)", _HOST_DECISIONS_ALERT_RULES),
    ]


_DOMAIN_OVERVIEW = [
    stat(
        "State",
        "virDomainState (libvirt_domain_state).",
        (4, 4),
        [
            now("libvirt_domain_state{@V}", "{{domain}}"),
        ],
        defaults={"mappings": state_mappings()},
        options={"textMode": "value_and_name"},
    ),
    stat(
        "State reason",
        ("The current state and why libvirt put the domain in it (libvirt_domain_state_reason, a "
         "virDomain<State>Reason code; the query shows 100 x state + reason so that the code names the "
         "reason of that state). Paused: I/O error is a guest stopped on a failed write, e.g. a full thin "
         "volume."),
        (6, 4),
        [
            now("100 * libvirt_domain_state{@V} + libvirt_domain_state_reason{@V}", "{{domain}}"),
        ],
        defaults={"mappings": reason_mappings()},
        options={"textMode": "value_and_name"},
    ),
    stat(
        "vCPUs",
        "vCPUs online (libvirt_domain_vcpus) and the maximum (libvirt_domain_vcpus_maximum).",
        (4, 4),
        [
            now("libvirt_domain_vcpus{@V}", "{{domain}} online"),
            now("libvirt_domain_vcpus_maximum{@V}", "{{domain}} maximum"),
        ],
        defaults={"decimals": 0},
        options={"colorMode": "none", "textMode": "value_and_name"},
    ),
    table(
        "Identity",
        ("libvirt_domain_info (UUID, OS type, machine, NUMA tuning) and OpenStack Nova metadata when the "
         "domain has it (libvirt_domain_openstack_info)."),
        (10, 4),
        [
            rows("libvirt_domain_info{@V}"),
            rows("libvirt_domain_openstack_info{@V}"),
        ],
        transformations=organize(exclude=("Value #A", "Value #B")),
    ),
    timeseries(
        "CPU frequency used",
        ("Per-VM CPU use in hertz (libvirt_domain_cpu_usage_mhz x 10^6; core MHz x cpu.time rate, OpenStack "
         "Neat's formula)."),
        (12, 8),
        [
            q("libvirt_domain_cpu_usage_mhz{@V} * 1e6", "{{domain}}"),
        ],
        unit="hertz",
    ),
    timeseries(
        "CPU time rate",
        ("CPU seconds per second of the QEMU process as a share of one host CPU (100 % = one host CPU busy): "
         "total (cpu.time), user and system."),
        (12, 8),
        [
            q("rate(libvirt_domain_cpu_seconds_total{@V}[$__rate_interval])", "{{domain}} total"),
            q("rate(libvirt_domain_cpu_user_seconds_total{@V}[$__rate_interval])", "{{domain}} user"),
            q("rate(libvirt_domain_cpu_system_seconds_total{@V}[$__rate_interval])", "{{domain}} system"),
        ],
        unit="percentunit",
    ),
]

_DOMAIN_CPU = [
    timeseries(
        "vCPU time",
        "Share of a host CPU each vCPU ran (rate of libvirt_domain_vcpu_seconds_total).",
        (8, 8),
        [
            q("rate(libvirt_domain_vcpu_seconds_total{@V}[$__rate_interval])", "{{domain}} vcpu {{vcpu}}"),
        ],
        unit="percentunit",
    ),
    timeseries(
        "vCPU delay (steal) and wait",
        ("Share of time each vCPU waited in the host run queue (delay, i.e. steal: rate of "
         "libvirt_domain_vcpu_delay_seconds_total) and wanted to run but was not scheduled (wait; needs "
         "schedstats: rate of libvirt_domain_vcpu_wait_seconds_total)."),
        (8, 8),
        [
            q("rate(libvirt_domain_vcpu_delay_seconds_total{@V}[$__rate_interval])", "{{domain}} vcpu {{vcpu}} delay"),
            q("rate(libvirt_domain_vcpu_wait_seconds_total{@V}[$__rate_interval])", "{{domain}} vcpu {{vcpu}} wait"),
        ],
        unit="percentunit",
    ),
    state_timeline(
        "vCPU state",
        "libvirt_domain_vcpu_state: offline, running, blocked (idle in the guest).",
        (8, 8),
        [
            q("libvirt_domain_vcpu_state{@V}", "{{domain}} vcpu {{vcpu}}"),
        ],
        defaults={"mappings": value_map({0: ("offline", "gray"), 1: ("running", "green"), 2: ("blocked", "blue")})},
    ),
]

_DOMAIN_MEMORY_AND_NUMA = [
    timeseries(
        "Memory",
        ("Maximum (balloon.maximum), current balloon size (balloon.current) and the QEMU process' resident "
         "set (balloon.rss)."),
        (8, 8),
        [
            q("libvirt_domain_memory_maximum_bytes{@V}", "{{domain}} maximum"),
            q("libvirt_domain_memory_current_bytes{@V}", "{{domain}} current"),
            q("libvirt_domain_memory_rss_bytes{@V}", "{{domain}} rss"),
        ],
        unit="bytes",
        overrides=[dashed(".* maximum$")],
    ),
    timeseries(
        "Guest-reported memory",
        ("What the guest's balloon driver reports (absent without one): available (the guest's total), "
         "usable without swapping, unused, reclaimable page cache."),
        (8, 8),
        [
            q("libvirt_domain_memory_available_bytes{@V}", "{{domain}} available"),
            q("libvirt_domain_memory_usable_bytes{@V}", "{{domain}} usable"),
            q("libvirt_domain_memory_unused_bytes{@V}", "{{domain}} unused"),
            q("libvirt_domain_memory_disk_caches_bytes{@V}", "{{domain}} disk caches"),
        ],
        unit="bytes",
    ),
    timeseries(
        "Guest swap and page faults",
        ("Guest-reported swap traffic (bytes/s) and major page faults (per second); absent without a "
         "balloon driver in the guest."),
        (8, 8),
        [
            q("rate(libvirt_domain_memory_swap_in_bytes_total{@V}[$__rate_interval])", "{{domain}} swap in"),
            q("rate(libvirt_domain_memory_swap_out_bytes_total{@V}[$__rate_interval])", "{{domain}} swap out"),
            q("rate(libvirt_domain_memory_major_faults_total{@V}[$__rate_interval])", "{{domain}} major faults/s"),
        ],
        unit="Bps",
        overrides=[override("byRegexp", ".*faults/s$", unit="short")],
    ),
    timeseries(
        "NUMA: memory per host cell",
        ("Resident memory of the VM's QEMU process on each host cell (libvirt_domain_numa_memory_bytes, "
         "from /proc/<pid>/numa_maps; needs root or the QEMU user)."),
        (12, 8),
        [
            q("libvirt_domain_numa_memory_bytes{@V}", "{{domain}} cell {{cell}}"),
        ],
        unit="bytes",
        defaults={"custom": {"fillOpacity": 40, "stacking": {"mode": "normal"}}},
    ),
    timeseries(
        "NUMA: vCPUs per host cell",
        "vCPUs whose thread last ran on a CPU of the cell (libvirt_domain_numa_vcpus).",
        (12, 8),
        [
            q("libvirt_domain_numa_vcpus{@V}", "{{domain}} cell {{cell}}"),
        ],
        defaults={"decimals": 0, "custom": {"drawStyle": "bars", "fillOpacity": 40, "stacking": {"mode": "normal"}}},
    ),
]

_DOMAIN_DISKS = [
    timeseries(
        "Disk throughput",
        ("Bytes read and written per second per disk; the legend shows the disk's source from "
         "libvirt_domain_block_info (top layer)."),
        (8, 8),
        [
            q(("rate(libvirt_domain_block_read_bytes_total{@V}[$__rate_interval]) * on (instance, domain, "
               "target) group_left (path) libvirt_domain_block_info{@V, backing_index=\"\"}"),
              "{{domain}} {{target}} read ({{path}})"),
            q(("rate(libvirt_domain_block_write_bytes_total{@V}[$__rate_interval]) * on (instance, domain, "
               "target) group_left (path) libvirt_domain_block_info{@V, backing_index=\"\"}"),
              "{{domain}} {{target}} write ({{path}})"),
        ],
        unit="Bps",
    ),
    timeseries(
        "Disk requests",
        "Read, write and flush requests per second.",
        (8, 8),
        [
            q("rate(libvirt_domain_block_read_requests_total{@V}[$__rate_interval])", "{{domain}} {{target}} read"),
            q("rate(libvirt_domain_block_write_requests_total{@V}[$__rate_interval])", "{{domain}} {{target}} write"),
            q("rate(libvirt_domain_block_flush_requests_total{@V}[$__rate_interval])", "{{domain}} {{target}} flush"),
        ],
        unit="iops",
    ),
    timeseries(
        "Disk latency",
        ("Average time per request: rate of the time counter / rate of the request counter (NaN, no point, "
         "while the disk has no requests of that kind)."),
        (8, 8),
        [
            q(("rate(libvirt_domain_block_read_time_seconds_total{@V}[$__rate_interval]) / "
               "rate(libvirt_domain_block_read_requests_total{@V}[$__rate_interval])"),
              "{{domain}} {{target}} read"),
            q(("rate(libvirt_domain_block_write_time_seconds_total{@V}[$__rate_interval]) / "
               "rate(libvirt_domain_block_write_requests_total{@V}[$__rate_interval])"),
              "{{domain}} {{target}} write"),
            q(("rate(libvirt_domain_block_flush_time_seconds_total{@V}[$__rate_interval]) / "
               "rate(libvirt_domain_block_flush_requests_total{@V}[$__rate_interval])"),
              "{{domain}} {{target}} flush"),
        ],
        unit="s",
    ),
    timeseries(
        "Allocation, physical and capacity per layer",
        ("Per disk and backing layer (backing_index, empty for the top): allocation (highest written "
         "offset; QEMU's runtime watermark, 0 when QEMU starts), physical (size of the storage under the "
         "image) and capacity (guest-visible size)."),
        (12, 8),
        [
            q("libvirt_domain_block_allocation_bytes{@V}", "{{domain}} {{target}} {{backing_index}} allocation"),
            q("libvirt_domain_block_physical_bytes{@V}", "{{domain}} {{target}} {{backing_index}} physical"),
            q("libvirt_domain_block_capacity_bytes{@V}", "{{domain}} {{target}} {{backing_index}} capacity"),
        ],
        unit="bytes",
        defaults={"custom": {"fillOpacity": 0}},
        overrides=[dashed(".* capacity$")],
    ),
    timeseries(
        "Thin volume headroom vs limit",
        ("Chunked volumes only (qcow2 on block storage): headroom = physical - allocation, the watermark "
         "limit (chunk x (100 - utilization%) / 100, dashed) under which vdsm extends the volume, and a "
         "write threshold armed with setBlockThreshold, if any."),
        (12, 8),
        [
            q("libvirt_domain_block_watermark_headroom_bytes{@V}", "{{domain}} {{target}} {{backing_index}} headroom"),
            q("libvirt_domain_block_watermark_limit_bytes{@V}", "{{domain}} {{target}} {{backing_index}} limit"),
            q("libvirt_domain_block_threshold_bytes{@V}", "{{domain}} {{target}} {{backing_index}} armed threshold"),
        ],
        unit="bytes",
        defaults={"custom": {"fillOpacity": 0}},
        overrides=[dashed(".* limit$", "red"), dashed(".* armed threshold$", "orange")],
    ),
    table(
        "Disks and layers",
        ("Every disk layer now: source, format and storage type (libvirt_domain_block_info) with its sizes, "
         "headroom and whether vdsm would extend it (libvirt_domain_block_extension_needed; chunked volumes "
         "only)."),
        (24, 8),
        [
            rows("libvirt_domain_block_info{@V}"),
            rows("libvirt_domain_block_allocation_bytes{@V}"),
            rows("libvirt_domain_block_physical_bytes{@V}"),
            rows("libvirt_domain_block_capacity_bytes{@V}"),
            rows("libvirt_domain_block_watermark_headroom_bytes{@V}"),
            rows("libvirt_domain_block_extension_needed{@V}"),
        ],
        overrides=[
            override("byRegexp", "allocation|physical|capacity|headroom", unit="bytes"),
            override("byName", "extension needed", mappings=value_map({0: ("no", "green"), 1: ("extend now", "red")})),
        ],
        transformations=organize(
            exclude=("Value #A",),
            rename={"Value #B": "allocation", "Value #C": "physical", "Value #D": "capacity", "Value #E": "headroom",
                    "Value #F": "extension needed"},
        ),
    ),
]

_DOMAIN_NETWORK = [
    timeseries(
        "Interface traffic",
        ("Bytes per second received and sent by the guest per interface; the legend shows what the "
         "interface is attached to (libvirt_domain_interface_info source)."),
        (8, 8),
        [
            q(("rate(libvirt_domain_interface_receive_bytes_total{@V}[$__rate_interval]) * on (instance, "
               "domain, interface) group_left (source) libvirt_domain_interface_info{@V}"),
              "{{domain}} {{interface}} rx {{source}}"),
            q(("rate(libvirt_domain_interface_transmit_bytes_total{@V}[$__rate_interval]) * on (instance, "
               "domain, interface) group_left (source) libvirt_domain_interface_info{@V}"),
              "{{domain}} {{interface}} tx {{source}}"),
        ],
        unit="Bps",
    ),
    timeseries(
        "Interface packets",
        "Packets per second received and sent.",
        (8, 8),
        [
            q("rate(libvirt_domain_interface_receive_packets_total{@V}[$__rate_interval])",
              "{{domain}} {{interface}} rx"),
            q("rate(libvirt_domain_interface_transmit_packets_total{@V}[$__rate_interval])",
              "{{domain}} {{interface}} tx"),
        ],
        unit="pps",
    ),
    timeseries(
        "Interface errors and drops",
        "Errors and dropped packets per second, both directions.",
        (8, 8),
        [
            q("rate(libvirt_domain_interface_receive_errors_total{@V}[$__rate_interval])",
              "{{domain}} {{interface}} rx errors"),
            q("rate(libvirt_domain_interface_transmit_errors_total{@V}[$__rate_interval])",
              "{{domain}} {{interface}} tx errors"),
            q("rate(libvirt_domain_interface_receive_drops_total{@V}[$__rate_interval])",
              "{{domain}} {{interface}} rx drops"),
            q("rate(libvirt_domain_interface_transmit_drops_total{@V}[$__rate_interval])",
              "{{domain}} {{interface}} tx drops"),
        ],
        unit="pps",
    ),
]

_DOMAIN_PERFMON = [
    timeseries(
        "Perfmon value vs level",
        ("The VM's consolidated perfmon values (libvirt_perfmon_value, one per engine step) and each "
         "variable's alarm_trigger_level (dashed). Needs --perfmon.config and a config for the VM."),
        (12, 8),
        [
            q("libvirt_perfmon_value{@V, object=\"vm\"}", "{{domain}} {{variable}}"),
            q("libvirt_perfmon_trigger_level{@V, object=\"vm\"}", "{{domain}} {{variable}} level"),
        ],
        overrides=[dashed(".* level$", "red")],
    ),
    timeseries(
        "Perfmon trigger countdown",
        ("perfmon's trigger_down_counter: seconds of bad values still needed before the next alarm attempt "
         "(libvirt_perfmon_trigger_countdown_seconds)."),
        (6, 8),
        [
            q("libvirt_perfmon_trigger_countdown_seconds{@V, object=\"vm\"}", "{{domain}} {{variable}}"),
        ],
        unit="s",
    ),
    table(
        "Perfmon alarms",
        ("Alarms sent for the VM in the selected range and the time of the last one "
         "(libvirt_perfmon_alarms_total, libvirt_perfmon_last_alarm_timestamp_seconds)."),
        (6, 8),
        [
            rows(("sum by (instance, domain, variable, priority) (increase(libvirt_perfmon_alarms_total{@V, "
                  "object=\"vm\"}[$__range])) > 0")),
            rows(("1000 * max by (instance, domain, variable, priority) "
                  "(libvirt_perfmon_last_alarm_timestamp_seconds{@V, object=\"vm\"})")),
        ],
        defaults={"decimals": 0},
        overrides=[override("byName", "last alarm", unit="dateTimeAsIso")],
        transformations=[{"id": "merge", "options": {}},
                         {"id": "organize",
                          "options": {"excludeByName": {"Time": True},
                                      "renameByName": {"Value #A": "alarms in range", "Value #B": "last alarm"}}}],
    ),
]

_DOMAIN_DECISIONS_ALERT_RULES = [
    against_threshold(
        "vCPU steal (LibvirtDomainVcpuSteal)",
        ("Share of wall time the domain's vCPUs waited in the host run queue, averaged over its vCPUs, over "
         "5 minutes (domain:libvirt_vcpu_steal:ratio); LibvirtDomainVcpuSteal fires above "
         "instance:libvirt_vcpu_steal_threshold:ratio for 15 minutes."),
        [
            q("domain:libvirt_vcpu_steal:ratio{@V}", "{{domain}}"),
        ],
        q("instance:libvirt_vcpu_steal_threshold:ratio{@H}", "threshold"),
        unit="percentunit",
    ),
    against_threshold(
        "NUMA remote memory (LibvirtDomainNumaRemoteMemory)",
        ("Share of the domain's resident memory on host cells where none of its vCPUs ran "
         "(domain:libvirt_numa_remote_memory:ratio); LibvirtDomainNumaRemoteMemory fires above "
         "instance:libvirt_numa_remote_memory_threshold:ratio for 30 minutes on hosts with more than one "
         "cell."),
        [
            q("domain:libvirt_numa_remote_memory:ratio{@V}", "{{domain}}"),
        ],
        q("instance:libvirt_numa_remote_memory_threshold:ratio{@H}", "threshold"),
        unit="percentunit",
    ),
    against_threshold(
        "Guest memory pressure (LibvirtDomainGuestMemoryPressure)",
        ("Usable / available memory as the guest reports it (domain:libvirt_memory_usable:ratio) and its "
         "swap-in rate (domain:libvirt_memory_swap_in_bytes:rate<window>): LibvirtDomainGuestMemoryPressure fires "
         "when the first is under instance:libvirt_guest_usable_memory_threshold:ratio or the second above "
         "0 for 15 minutes. Only guests with a balloon driver report these."),
        [
            q("domain:libvirt_memory_usable:ratio{@V}", "{{domain}} usable"),
            q("@S:swap_in{@V}", "{{domain}} swap-in"),
        ],
        q("instance:libvirt_guest_usable_memory_threshold:ratio{@H}", "usable threshold"),
        unit="percentunit",
        overrides=[override("byRegexp", ".* swap-in$", unit="Bps")],
    ),
    against_threshold(
        "Disk time per request (LibvirtDomainDiskLatencyHigh)",
        ("Mean read and write time per request over 10 minutes "
         "(domain:libvirt_disk_*_latency_seconds:mean<window>): LibvirtDomainDiskLatencyHigh fires above "
         "instance:libvirt_disk_latency_threshold:seconds at a request rate of at least "
         "instance:libvirt_disk_busy_threshold:requests_per_second."),
        [
            q("@S:read_latency{@V}", "{{domain}} {{target}} read"),
            q("@S:write_latency{@V}", "{{domain}} {{target}} write"),
        ],
        q("instance:libvirt_disk_latency_threshold:seconds{@H}", "threshold"),
        unit="s",
    ),
    timeseries(
        "Interface errors and drops per second (LibvirtDomainInterfaceErrors)",
        ("Errors and drops, both directions, per second over 5 minutes "
         "(domain:libvirt_interface_errors:rate<window>): LibvirtDomainInterfaceErrors fires while it stays above "
         "0 for 15 minutes."),
        (12, 8),
        [
            q("@S:interface_errors{@V}", "{{domain}} {{interface}}"),
        ],
        unit="pps",
    ),
]

_DOMAIN_TUNING = [
    timeseries(
        "vCPU time, all vCPUs",
        ("Share of a host CPU all the domain's vCPUs ran, and waited in the host run queue: the per-vCPU "
         "series summed, or with --no-collector.vcpu.per-vcpu the per-domain sums "
         "(libvirt_domain_vcpus_seconds_total, libvirt_domain_vcpus_delay_seconds_total)."),
        (12, 8),
        [
            q("sum without (vcpu) (rate(libvirt_domain_vcpu_seconds_total{@V}[$__rate_interval])) "
              "or rate(libvirt_domain_vcpus_seconds_total{@V}[$__rate_interval])", "{{domain}} ran"),
            q("sum without (vcpu) (rate(libvirt_domain_vcpu_delay_seconds_total{@V}[$__rate_interval])) "
              "or rate(libvirt_domain_vcpus_delay_seconds_total{@V}[$__rate_interval])", "{{domain}} delay"),
        ],
        unit="percentunit",
    ),
    timeseries(
        "Halt polling",
        ("Share of a host CPU the vCPUs spent halt-polling, ending in a wake-up (success) or scheduled out "
         "(fail) (rate of libvirt_domain_cpu_haltpoll_success_seconds_total / _fail_seconds_total)."),
        (12, 8),
        [
            q("rate(libvirt_domain_cpu_haltpoll_success_seconds_total{@V}[$__rate_interval])", "{{domain}} success"),
            q("rate(libvirt_domain_cpu_haltpoll_fail_seconds_total{@V}[$__rate_interval])", "{{domain}} fail"),
        ],
        unit="percentunit",
    ),
    table(
        "Pinning",
        ("Host CPUs each vCPU (libvirt_domain_vcpu_pin_info) and the emulator threads "
         "(libvirt_domain_emulator_pin_info) may run on."),
        (8, 8),
        [
            rows("libvirt_domain_vcpu_pin_info{@V}"),
            rows("libvirt_domain_emulator_pin_info{@V}"),
        ],
        transformations=organize(exclude=("Value #A", "Value #B"), merged=False),
    ),
    table(
        "I/O limits",
        ("Throttling limits per disk from <iotune>: bytes/s and requests/s, steady and burst "
         "(libvirt_domain_block_iotune_*); no row for a disk without limits."),
        (8, 8),
        [
            rows("libvirt_domain_block_iotune_bytes_per_second{@V}"),
            rows("libvirt_domain_block_iotune_requests_per_second{@V}"),
            rows("libvirt_domain_block_iotune_burst_bytes_per_second{@V}"),
            rows("libvirt_domain_block_iotune_burst_requests_per_second{@V}"),
        ],
        transformations=organize(rename={"Value #A": "bytes/s", "Value #B": "requests/s",
                                         "Value #C": "burst bytes/s", "Value #D": "burst requests/s"}),
    ),
    table(
        "Autostart, persistence, metadata",
        ("Whether the domain starts with the host (libvirt_domain_autostart) and is defined "
         "(libvirt_domain_persistent), and the labels from its metadata (libvirt_domain_metadata_info, with "
         "--collector.domain.metadata-label)."),
        (8, 8),
        [
            rows("libvirt_domain_autostart{@V}"),
            rows("libvirt_domain_persistent{@V}"),
            rows("libvirt_domain_metadata_info{@V}"),
        ],
        transformations=organize(exclude=("Value #C",), rename={"Value #A": "autostart", "Value #B": "persistent"}),
    ),
    timeseries(
        "IOThread polling",
        ("Longest time each IOThread polls before it sleeps (libvirt_domain_iothread_poll_max_seconds; "
         "--collector.iothread)."),
        (24, 8),
        [
            q("libvirt_domain_iothread_poll_max_seconds{@V}", "{{domain}} iothread {{iothread}}"),
        ],
        unit="s",
    ),
]

_DOMAIN_GUEST_AGENT = [
    timeseries(
        "Guest filesystem use",
        ("Share of each guest filesystem in use, as the guest agent reports it "
         "(libvirt_domain_guest_filesystem_used_bytes / _size_bytes; --collector.guest_agent)."),
        (16, 8),
        [
            q("libvirt_domain_guest_filesystem_used_bytes{@V} / libvirt_domain_guest_filesystem_size_bytes{@V}",
              "{{domain}} {{mountpoint}}"),
        ],
        unit="percentunit",
    ),
    table(
        "Guest agent and OS",
        ("Whether the guest agent answers (libvirt_domain_guest_agent_up) and the OS and hostname it reports "
         "(libvirt_domain_guest_os_info)."),
        (8, 8),
        [
            rows("libvirt_domain_guest_agent_up{@V}"),
            rows("libvirt_domain_guest_os_info{@V}"),
        ],
        transformations=organize(exclude=("Value #B",), rename={"Value #A": "agent up"}),
    ),
]

_DOMAIN_JOBS = [
    timeseries(
        "Migration progress",
        ("A running job's data moved and still to move (libvirt_domain_job_data_processed_bytes / "
         "_remaining_bytes, --collector.job); shown on the host the job runs from (a migration's source)."),
        (12, 8),
        [
            q("libvirt_domain_job_data_processed_bytes{@V}", "{{domain}} processed"),
            q("libvirt_domain_job_data_remaining_bytes{@V}", "{{domain}} remaining"),
        ],
        unit="bytes",
    ),
    timeseries(
        "Migration transfer vs dirty rate",
        ("Memory sent vs memory the guest dirties per second, and the pass over memory (right axis): a dirty "
         "rate at the transfer rate pass after pass is a migration that does not converge "
         "(LibvirtDomainMigrationNotConverging)."),
        (12, 8),
        [
            q("libvirt_domain_job_memory_transfer_rate_bytes_per_second{@V}", "{{domain}} transfer"),
            q("libvirt_domain_job_memory_dirty_rate_bytes_per_second{@V}", "{{domain}} dirtied"),
            q("libvirt_domain_job_memory_iteration{@V}", "{{domain}} pass"),
        ],
        unit="Bps",
        overrides=[override("byFrameRefID", "C", unit="short", custom__axisPlacement="right")],
    ),
]


def _domain_rows() -> List[Section]:
    return [
        row("Overview", _DOMAIN_OVERVIEW, collapsed=False),
        row("CPU", _DOMAIN_CPU),
        row("Memory and NUMA", _DOMAIN_MEMORY_AND_NUMA),
        row("Disks", _DOMAIN_DISKS),
        row("Network", _DOMAIN_NETWORK),
        row("Tuning and configuration", _DOMAIN_TUNING),
        row("Guest agent", _DOMAIN_GUEST_AGENT),
        row("Jobs", _DOMAIN_JOBS),
        row("Perfmon", _DOMAIN_PERFMON),
        row("Decisions (alert rules)", _DOMAIN_DECISIONS_ALERT_RULES),
    ]


# --- boards ---------------------------------------------------------------------------------------------


def _query_variable(
    name: str, label: str, query: str, include_all: bool = False, all_value: Optional[str] = None
) -> dict:
    """A label_values() variable, read once when the board loads (not on every refresh)."""
    out: Dict[str, Any] = {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DATASOURCE,
        "query": query,
        "definition": query,
        "current": {},
        "hide": 0,
        "includeAll": include_all,
        "multi": False,
        "options": [],
        "refresh": 1,
        "regex": "",
        "skipUrlSync": False,
        "sort": 1,
    }
    if all_value is not None:
        out["allValue"] = all_value
    return out


def _variables(config: Mapping[str, Any], with_domain: bool) -> List[dict]:
    """datasource, job, datacenter (when configured), instance and, on the domain board, domain."""
    knobs = config["dashboards"]
    out = [
        {
            "name": "datasource",
            "label": "Data source",
            "type": "datasource",
            "query": "prometheus",
            "current": {"selected": False, "text": knobs["datasource"], "value": knobs["datasource"]},
            "hide": 0,
            "includeAll": False,
            "multi": False,
            "options": [],
            "refresh": 1,
            "regex": "",
            "skipUrlSync": False,
        }
    ]
    # All jobs the selector matches by default; the alternation Grafana builds for All stays inside them.
    out.append(
        _query_variable("job", "Job", "label_values(libvirt_up{%s}, job)" % config["job_selector"], include_all=True)
    )
    host_filter = 'job=~"$job"'
    dc_label = config["datacenter_label"]
    if dc_label:
        # .* also matches a series without the label: where no target has one, All is the only choice.
        out.append(
            _query_variable(
                "datacenter",
                "Datacenter",
                "label_values(libvirt_up{%s}, %s)" % (host_filter, dc_label),
                include_all=True,
                all_value=".*",
            )
        )
        host_filter += ', %s=~"$datacenter"' % dc_label
    out.append(_query_variable("instance", "Host", "label_values(libvirt_up{%s}, instance)" % host_filter))
    if with_domain:
        out.append(
            _query_variable(
                "domain",
                "Domain",
                'label_values(libvirt_domain_info{%s, instance="$instance"}, domain)' % host_filter,
                include_all=True,
                all_value=".+",
            )
        )
        out[-1]["multi"] = True
    return out


def _requires(panels: List[dict]) -> List[dict]:
    kinds = sorted({p["type"] for p in panels for p in [p, *p.get("panels", [])] if p["type"] != "row"})
    return [
        {"type": "grafana", "id": "grafana", "name": "Grafana", "version": "10.0.0"},
        {"type": "datasource", "id": "prometheus", "name": "Prometheus", "version": "1.0.0"},
    ] + [{"type": "panel", "id": k, "name": PANEL_NAMES[k], "version": ""} for k in kinds]


def _board(
    config: Mapping[str, Any],
    uid: str,
    title: str,
    description: str,
    sections: Sequence[Tuple[str, bool, List[dict]]],
    with_domain: bool,
) -> dict:
    knobs = config["dashboards"]
    panels = _expand(layout(sections), _markers(config))
    return {
        "__elements": {},
        "__requires": _requires(panels),
        "annotations": {
            "list": [
                {
                    "builtIn": 1,
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                    "name": "Annotations & Alerts",
                    "type": "dashboard",
                }
            ]
        },
        "description": description,
        "editable": True,
        "fiscalYearStartMonth": 0,
        "graphTooltip": 1,
        "id": None,
        "links": [
            {
                "title": "Domain drill-down",
                "type": "dashboards",
                "tags": ["virt-exporter"],
                "asDropdown": False,
                "includeVars": True,
                "keepTime": True,
                "icon": "external link",
                "targetBlank": False,
                "tooltip": "",
                "url": "",
            }
        ],
        "liveNow": False,
        "panels": panels,
        "refresh": knobs["refresh"],
        "schemaVersion": 39,
        "tags": ["virt-exporter", "libvirt", "kvm"],
        "templating": {"list": _variables(config, with_domain)},
        "time": {"from": knobs["time_from"], "to": "now"},
        "timepicker": {},
        "timezone": knobs["timezone"],
        "title": title,
        "uid": uid,
        "version": 1,
        "weekStart": "",
    }


def render(cfg: MixinConfig) -> Dict[str, dict]:
    """{file name: dashboard JSON model} for the knobs in cfg (see the module docstring)."""
    full = {"job_selector": cfg.job_selector, "datacenter_label": cfg.datacenter_label,
            "dashboards": dict(cfg.dashboards), "series": guest_series(cfg)}
    return {
        "virt-host.json": _board(
            full,
            HOST_UID,
            "libvirt / KVM host",
            "virt_exporter host overview: libvirt and exporter health, CPU with the overload threshold, memory "
            "and NUMA cells, domain counts, top VMs, thin volumes, perfmon alarms.",
            _host_rows(),
            with_domain=False,
        ),
        "virt-domain.json": _board(
            full,
            DOMAIN_UID,
            "libvirt / KVM domain",
            "virt_exporter per-VM drill-down: state, CPU, vCPUs, memory, NUMA placement, disks and watermarks, "
            "interfaces, perfmon.",
            _domain_rows(),
            with_domain=True,
        ),
    }


def dump(board: dict) -> str:
    """The file text: two-space JSON, keys in the order built, a final newline."""
    return json.dumps(board, indent=2, ensure_ascii=False) + "\n"
