"""Native Prometheus alerting rules (and an Alertmanager route fragment) for a perfmon config.

The exact path is the engine plus ``PerfmonAlarm`` (alerts/optional/perfmon.rules.yml). This generator is the
engine-free alternative, as close as PromQL gets:

- data sources become one recorded series, ``perfmon:datasource:value{object, datasource}``, from the
  raw metrics (this exporter's for VMs and host memory, node_exporter's for host CPU, interfaces and
  filesystems), each a rate over the last scrape interval (irate) like perfmon's RRD rows;
- ``rrd_regex`` becomes a regex matcher on ``datasource`` with perfmon's search (unanchored) semantics;
- the consolidation function becomes ``sum``/``avg``/``max by (instance, job, domain)``;
- level and sense become the comparison, the period ``for: (ceil(period/step) − 1) × step``, which at
  an evaluation interval equal to the step fires on the same step as perfmon's first alarm;
- priority becomes labels (priority, severity), the auto-inhibit period the ``repeat_interval`` of a
  generated Alertmanager route.

Where it cannot be exact (see docs/perfmon.md, "Native rules: known deviations"): no re-arming (one
alert per bad spell, repeated by Alertmanager), no inhibit across a spell that clears and returns, one
rule set for every VM (per-VM configs need ``--domain``), interfaces named by device rather than by
index, a ``sum`` over no data source is no series rather than 0, and Python-only regex syntax.
"""

from __future__ import annotations

import math
import re
from typing import Any, Dict, List, Optional, Tuple

from .config import ObjectConfig, VariableConfig, severity_of_priority

DATASOURCE_METRIC = "perfmon:datasource:value"
FS_METRIC = "perfmon:fs_usage:ratio"
NATIVE_ALERT = "PerfmonNative"
VIF_INDEX_PROBE = 32  # vif_0 … vif_31: enough to tell an index-independent regex from one that is not

# Python regex syntax RE2 (Prometheus) does not have.
_NOT_RE2 = re.compile(r"\(\?[=!]|\(\?<[=!]|\(\?P=|\(\?\(|\(\?>|\\[1-9]|\\Z|\(\?#|[*+?}][+]")


def _promql_string(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _number(x: float) -> str:
    return repr(float(x)) if not float(x).is_integer() or abs(x) >= 1e15 else str(int(x))


def datasource_rules(object_type: str, step_s: int, rule_set: str,
                     domain: Optional[str] = None) -> List[Dict[str, Any]]:
    """Recording rules turning the raw metrics into perfmon's data sources, one rate per scrape.

    ``rule_set`` labels the recorded series so several generated files never record the same series;
    ``domain`` restricts the VM metrics to one domain."""
    w = "[%ds]" % (2 * step_s)  # irate needs the last two samples; scrape interval = step
    d = ', domain=%s' % _promql_string(domain) if domain else ""
    only = "{%s}" % d[2:] if d else ""

    def rec(source: str, expr: str) -> Dict[str, Any]:
        # perfmon_source tells the recording rules apart (promtool lints identical ones).
        return {"record": DATASOURCE_METRIC, "expr": expr,
                "labels": {"object": object_type, "perfmon_set": rule_set, "perfmon_source": source}}

    if object_type == "vm":
        return [
            rec("vcpu", 'label_replace(irate(libvirt_domain_vcpu_seconds_total%s%s), "datasource", "cpu${1}", "vcpu", '
                '"(.*)")' % (only, w)),
            rec("interface_rx", 'label_replace(irate(libvirt_domain_interface_receive_bytes_total%s%s), "datasource", '
                '"vif_${1}_rx", "interface", "(.*)")' % (only, w)),
            rec("interface_tx", 'label_replace(irate(libvirt_domain_interface_transmit_bytes_total%s%s), "datasource", '
                '"vif_${1}_tx", "interface", "(.*)")' % (only, w)),
            rec("block_read", 'label_replace(irate(libvirt_domain_block_read_bytes_total{backing_index=""%s}%s), '
                '"datasource", "vbd_${1}_read", "target", "(.*)")' % (d, w)),
            rec("block_write", 'label_replace(irate(libvirt_domain_block_write_bytes_total{backing_index=""%s}%s), '
                '"datasource", "vbd_${1}_write", "target", "(.*)")' % (d, w)),
            rec("memory", 'label_replace(libvirt_domain_memory_current_bytes%s, "datasource", "memory", '
                '"__name__", ".*")'
                % only),
            rec("memory_unused", 'label_replace(libvirt_domain_memory_unused_bytes%s / 1024, "datasource", '
                '"memory_internal_free", "__name__", ".*")' % only),
        ]
    busy = 'sum without (mode) (irate(node_cpu_seconds_total{mode=~"user|nice|system"}%s))' % w
    total = 'sum without (mode) (irate(node_cpu_seconds_total{mode=~"user|nice|system|idle|iowait|irq|softirq"}%s))' % w
    return [
        rec("cpu", 'label_replace(%s / %s, "datasource", "cpu${1}", "cpu", "(.*)")' % (busy, total)),
        rec("interface_rx", 'label_replace(irate(node_network_receive_bytes_total%s), "datasource", "pif_${1}_rx", '
            '"device", "(.*)")' % w),
        rec("interface_tx", 'label_replace(irate(node_network_transmit_bytes_total%s), "datasource", "pif_${1}_tx", '
            '"device", "(.*)")' % w),
        rec("memory_free", 'label_replace(libvirt_host_memory_free_bytes / 1024, "datasource", "memory_free_kib", '
            '"__name__", ".*")'),
        rec("memory_total", 'label_replace(libvirt_host_memory_bytes / 1024, "datasource", "memory_total_kib", '
            '"__name__", ".*")'),
    ]


def fs_rule(mountpoint: str, rule_set: str) -> Dict[str, Any]:
    """get_percent_fs_usage: used / (used + available) of one filesystem, as df and the engine compute it."""
    m = "{mountpoint=%s}" % _promql_string(mountpoint)
    return {"record": FS_METRIC,
            "expr": "1 - node_filesystem_avail_bytes%s / (node_filesystem_size_bytes%s - node_filesystem_free_bytes%s "
                    "+ node_filesystem_avail_bytes%s)" % (m, m, m, m),
            "labels": {"perfmon_set": rule_set}}


def datasource_matcher(var: VariableConfig, object_type: str) -> str:
    """The PromQL regex over ``datasource`` selecting what ``rrd_regex.search`` selects in the engine.

    Raises ValueError when that cannot be expressed."""
    pattern = var.rrd_regex
    if _NOT_RE2.search(pattern):
        raise ValueError("rrd_regex %r uses Python-only regex syntax (lookaround, backreference …) that "
                         "Prometheus' RE2 does not have" % pattern)
    alternatives = [".*(?:%s).*" % pattern]
    if object_type == "vm":
        # The engine's vif_N names carry libvirt's interface index; the raw metrics carry the device name.
        for direction in ("rx", "tx"):
            hits = [var.regex.search("vif_%d_%s" % (i, direction)) is not None for i in range(VIF_INDEX_PROBE)]
            if all(hits):
                alternatives.append("vif_.+_%s" % direction)
            elif any(hits):
                raise ValueError("rrd_regex %r selects interfaces by index (vif_N), which the raw metrics do not "
                                 "carry" % pattern)
    return "|".join(alternatives)


def periods_for(var: VariableConfig, step_s: int) -> int:
    """Seconds of ``for:``: the alert fires on the ceil(period/step)-th consecutive bad evaluation."""
    steps = max(1, math.ceil(var.alarm_trigger_period_s / step_s))
    return (steps - 1) * step_s


def rule_id(object_type: str, domain: Optional[str], variable: str) -> str:
    return "/".join([object_type] + ([domain] if domain else []) + [variable])


def alert_rule(var: VariableConfig, object_type: str, step_s: int, domain: Optional[str] = None) -> Dict[str, Any]:
    """One alerting rule for one variable; ValueError when it cannot be expressed."""
    rule_set = rule_id(object_type, domain, "").rstrip("/")
    if var.consolidation_fn == "get_percent_fs_usage":
        value = "max by (instance, job) (%s{perfmon_set=%s})" % (FS_METRIC, _promql_string(rule_set))
    else:
        matchers = ["perfmon_set=%s" % _promql_string(rule_set),
                    "datasource=~%s" % _promql_string(datasource_matcher(var, object_type))]
        agg = {"sum": "sum", "average": "avg", "max": "max"}[var.consolidation_fn]
        value = "%s by (instance, job, domain) (%s{%s})" % (agg, DATASOURCE_METRIC, ", ".join(matchers))
    op = ">" if var.sense_high else "<"
    labels = {"object": object_type, "variable": var.name, "priority": str(var.alarm_priority),
              "severity": severity_of_priority(var.alarm_priority),
              "perfmon_rule": rule_id(object_type, domain, var.name)}
    if domain and var.consolidation_fn == "get_percent_fs_usage":
        labels["domain"] = domain
    return {
        "alert": NATIVE_ALERT,
        "expr": "%s %s %s" % (value, op, _number(var.alarm_trigger_level)),
        "for": "%ds" % periods_for(var, step_s),
        "labels": labels,
        "annotations": {
            "summary": "perfmon %s %s%s %s %s for %ss" % (
                object_type, "{{ $labels.domain }} " if object_type == "vm" else "", var.name,
                "above" if var.sense_high else "below", _number(var.alarm_trigger_level), var.alarm_trigger_period_s),
            "value": "{{ $value }}",
        },
    }


def native_rules(configs: List[Tuple[ObjectConfig, Optional[str]]], step_s: int,
                 fs_mountpoint: str = "/") -> Tuple[Dict[str, Any], List[str]]:
    """A Prometheus rules file (as a dict) for ``(config, domain or None)`` pairs, and the warnings
    for variables that could not be expressed (they are left out).

    Each pair is one rule group: its data-source recording rules first, then its alerts, because
    Prometheus evaluates the rules of a group in order but groups independently of each other."""
    groups: List[Dict[str, Any]] = []
    warnings: List[str] = []
    for cfg, domain in configs:
        rule_set = rule_id(cfg.object_type, domain, "").rstrip("/")
        alerts = []
        uses_fs = False
        for var in cfg.variables:
            try:
                alerts.append(alert_rule(var, cfg.object_type, step_s, domain))
            except ValueError as e:
                warnings.append("%s: variable %s left out: %s" % (rule_id(cfg.object_type, domain, var.name),
                                                                  var.name, e))
                continue
            uses_fs = uses_fs or var.consolidation_fn == "get_percent_fs_usage"
        rules = datasource_rules(cfg.object_type, step_s, rule_set, domain)
        if uses_fs:
            rules.append(fs_rule(fs_mountpoint, rule_set))
        groups.append({"name": "perfmon-native-" + rule_set.replace("/", "-"), "interval": "%ds" % step_s,
                       "rules": rules + alerts})
    return {"groups": groups}, warnings


def alertmanager_routes(configs: List[Tuple[ObjectConfig, Optional[str]]], step_s: int,
                        receiver: str = "perfmon") -> Dict[str, Any]:
    """Alertmanager child routes giving each native alert perfmon's auto-inhibit period as its
    repeat_interval (Alertmanager refuses 0, so 0 becomes 1s)."""
    routes = []
    for cfg, domain in configs:
        for var in cfg.variables:
            try:
                alert_rule(var, cfg.object_type, step_s, domain)
            except ValueError:
                continue  # left out of the rules (native_rules says why)
            routes.append({
                "matchers": ['alertname="%s"' % NATIVE_ALERT,
                             'perfmon_rule="%s"' % rule_id(cfg.object_type, domain, var.name).replace('"', '\\"')],
                "receiver": receiver,
                "group_by": ["..."],
                "group_wait": "0s",
                "group_interval": "%ds" % step_s,
                "repeat_interval": "%ds" % max(1, var.alarm_auto_inhibit_period_s),
            })
    return {"routes": routes}
