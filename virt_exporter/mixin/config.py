"""The knobs file of ``virt-exporter mixin``: every setting the rules and dashboards share, validated.

A knobs file is YAML with any subset of the keys below; what it leaves out keeps its default. An
unknown key or a bad value is a ``MixinConfigError`` naming the key (the CLI prints it on one line and
exits 2). ``MixinConfig`` is the validated result, the object the rules and dashboards renderers get.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any, Dict, Mapping, Tuple

import yaml

DEFAULT_JOB_SELECTOR = 'job="virt-exporter"'
# Where the runbook is published; alerts link to "<runbook_url>#<alert name in lower case>".
DEFAULT_RUNBOOK_URL = "docs/runbook.md"

# Optional rule groups and whether they are on by default.
OPTIONAL_GROUPS: Dict[str, bool] = {
    # OpenStack Neat's consolidation decisions (underloaded host, migration candidate): advice that
    # fires on most hosts of an ordinary fleet, for operators who consolidate.
    "neat": False,
    # PerfmonAlarm: only useful with the exporter's perfmon engine (--perfmon.config).
    "perfmon": False,
}


@dataclasses.dataclass(frozen=True)
class Threshold:
    """A per-host threshold: a recorded series whose value is the default unless an override exists."""

    key: str          # the knob, and the value of the override series' `threshold` label
    record: str       # the recorded series the alerts and dashboards read
    default: float
    ratio: bool       # a share, 0..1
    help: str


THRESHOLDS: Tuple[Threshold, ...] = (
    Threshold("cpu_overload_ratio", "instance:libvirt_cpu_overload_threshold:ratio", 0.8, True,
              "Neat's host_cpu_overload_threshold: overloaded when Σ VM MHz + overhead > ratio × capacity"),
    Threshold("cpu_underload_ratio", "instance:libvirt_cpu_underload_threshold:ratio", 0.3, True,
              "Neat's host_cpu_underload_threshold: underloaded at or under this average utilization"),
    Threshold("migration_bandwidth_bytes_per_second", "instance:libvirt_migration_bandwidth:bytes_per_second",
              125e6, False, "Neat's network_migration_bandwidth (1 Gbit/s), for the migration time estimate"),
    Threshold("host_memory_available_ratio", "instance:libvirt_memory_low_threshold:ratio", 0.10, True,
              "host memory low when MemAvailable is under this share of the memory"),
    Threshold("guest_usable_memory_ratio", "instance:libvirt_guest_usable_memory_threshold:ratio", 0.10, True,
              "guest short of memory under this share of usable / available memory"),
    Threshold("guest_swap_in_bytes_per_second", "instance:libvirt_guest_swap_in_threshold:bytes_per_second",
              0.0, False, "guest short of memory when it swaps in faster than this"),
    Threshold("disk_latency_seconds", "instance:libvirt_disk_latency_threshold:seconds", 0.1, False,
              "disk slow above this mean time per request"),
    Threshold("disk_busy_requests_per_second", "instance:libvirt_disk_busy_threshold:requests_per_second",
              1.0, False, "... only at this request rate or more (one slow request on an idle disk alerts no one)"),
    Threshold("interface_errors_per_second", "instance:libvirt_interface_errors_threshold:per_second", 0.0, False,
              "interface errors + drops per second above this"),
    Threshold("vcpu_steal_ratio", "instance:libvirt_vcpu_steal_threshold:ratio", 0.10, True,
              "vCPUs waiting for a host CPU above this share of the time"),
    Threshold("numa_remote_memory_ratio", "instance:libvirt_numa_remote_memory_threshold:ratio", 0.5, True,
              "share of a domain's memory on cells where none of its vCPUs ran"),
    Threshold("volume_headroom_ratio", "instance:libvirt_volume_headroom_threshold:ratio", 0.02, True,
              "thin volume almost full under this share of its capacity left"),
    Threshold("disk_allocation_ratio", "instance:libvirt_disk_allocation_threshold:ratio", 0.9, True,
              "qcow2 disk allocated over this share of its virtual size"),
    Threshold("migration_dirty_to_transfer_ratio", "instance:libvirt_migration_dirty_rate_threshold:ratio",
              0.9, True, "a live migration does not converge when the guest dirties memory at this share of the "
              "transfer rate or more (QEMU's dirty rate levels off at the transfer rate, not above it) ..."),
    Threshold("migration_iterations", "instance:libvirt_migration_iterations_threshold:count", 3.0, False,
              "... after this many passes over guest memory (the first pass copies everything)"),
)
THRESHOLD_BY_KEY = {t.key: t for t in THRESHOLDS}

# Range windows: (default, what it averages or looks back over).
WINDOWS: Dict[str, Tuple[str, str]] = {
    "vcpu_steal": ("5m", "vCPU wait averaged over"),
    "guest_swap_in": ("5m", "guest swap-in rate over"),
    "disk_latency": ("10m", "mean disk latency and request rate over"),
    "interface_errors": ("5m", "interface errors + drops rate over"),
    "cpu_utilization": ("10m", "Neat's average utilization over (its last-n-samples average)"),
    "backing_growth": ("10m", "a backing layer counts as written while its allocation grew within"),
    "disk_enospc": ("10m", "an ENOSPC error alerts for this long (longer while the domain stays paused)"),
    "guest_memory_stats": ("15m", "balloon stats stale when their last-update did not change within"),
    "job_failed": ("10m", "a domain job that ended failed or cancelled alerts for this long"),
}

# Every alert's `for`.
FOR: Dict[str, str] = {
    "VirtExporterDown": "5m",
    "LibvirtDown": "5m",
    "LibvirtDomainUnresponsive": "5m",
    "LibvirtExporterCollectorFailing": "15m",
    "LibvirtHostCpuOverload": "5m",
    "LibvirtHostMemoryLow": "10m",
    "LibvirtVolumeExtensionNeeded": "2m",
    "LibvirtVolumeHeadroomLow": "1m",
    "LibvirtDiskAllocationNearCapacity": "15m",
    "LibvirtDiskNoSpace": "1m",
    "LibvirtDomainPausedOnIOError": "1m",
    "LibvirtDomainGuestMemoryPressure": "15m",
    "LibvirtDomainGuestMemoryStatsStale": "15m",
    "LibvirtDomainDiskLatencyHigh": "10m",
    "LibvirtDomainInterfaceErrors": "15m",
    "LibvirtDomainVcpuSteal": "15m",
    "LibvirtDomainNumaRemoteMemory": "30m",
    "LibvirtHostUnderloaded": "30m",
    "LibvirtMigrationCandidate": "5m",
    "LibvirtDomainMigrationNotConverging": "2m",
    "LibvirtDomainJobFailed": "0s",
    "PerfmonAlarm": "0s",
}

TOP_KEYS = ("job_selector", "datacenter_label", "runbook_url", "groups", "thresholds", "windows", "for", "dashboards")
# Dashboard-only knobs: the board refresh, the default time range, the data source variable's default
# and the time zone (Grafana's own values; "default" is the instance's default Prometheus).
DASHBOARD_KNOBS: Dict[str, str] = {
    "refresh": "30s",
    "time_from": "now-1h",
    "datasource": "default",
    "timezone": "browser",
}

_DURATION_RE = re.compile(r"^(?:\d+y)?(?:\d+w)?(?:\d+d)?(?:\d+h)?(?:\d+m)?(?:\d+s)?(?:\d+ms)?$")
_LABEL_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_MATCHER = r'\s*[a-zA-Z_][a-zA-Z0-9_]*\s*(?:=~|!~|!=|=)\s*"(?:[^"\\\n]|\\.)*"\s*'
_SELECTOR_RE = re.compile(r"^%s(?:,%s)*$" % (_MATCHER, _MATCHER))


class MixinConfigError(ValueError):
    """A knobs file that cannot be used; the message names the key."""


@dataclasses.dataclass(frozen=True)
class MixinConfig:
    """The validated knobs. Rules and dashboards renderers take this object.

    - ``job_selector``: PromQL label matchers without braces (``job="virt-exporter"``) that select this
      exporter's series; every selector of every rule and query carries it.
    - ``datacenter_label``: the target label naming a host's datacenter (dashboards' variable).
    - ``runbook_url``: the runbook's address; each alert links to ``<runbook_url>#<alertname lower>``.
    - ``groups``: optional rule group name → on/off (``neat``, ``perfmon``).
    - ``thresholds``: threshold key (``THRESHOLDS``) → the fleet-wide default.
    - ``windows``: window key (``WINDOWS``) → a Prometheus duration.
    - ``for_``: alert name → its ``for`` duration.
    - ``dashboards``: dashboard-only knobs (``DASHBOARD_KNOBS``).
    """

    job_selector: str = DEFAULT_JOB_SELECTOR
    datacenter_label: str = "datacenter"
    runbook_url: str = DEFAULT_RUNBOOK_URL
    groups: Mapping[str, bool] = dataclasses.field(default_factory=lambda: dict(OPTIONAL_GROUPS))
    thresholds: Mapping[str, float] = dataclasses.field(
        default_factory=lambda: {t.key: t.default for t in THRESHOLDS})
    windows: Mapping[str, str] = dataclasses.field(default_factory=lambda: {k: v[0] for k, v in WINDOWS.items()})
    for_: Mapping[str, str] = dataclasses.field(default_factory=lambda: dict(FOR))
    dashboards: Mapping[str, str] = dataclasses.field(default_factory=lambda: dict(DASHBOARD_KNOBS))

    def enabled(self, group: str) -> bool:
        return self.groups.get(group, True)

    def threshold_record(self, key: str) -> str:
        """The recorded series of threshold ``key``, what dashboards colour by."""
        return THRESHOLD_BY_KEY[key].record


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise MixinConfigError("%s: want a mapping, got %r" % (where, value))
    return value


def _known(value: Mapping[str, Any], allowed: Any, where: str) -> None:
    for key in value:
        if key not in allowed:
            raise MixinConfigError("%sunknown key %r (known: %s)" % (
                where + "." if where else "", key, ", ".join(sorted(allowed))))


def _duration(value: Any, where: str, zero_ok: bool) -> str:
    if not isinstance(value, str) or not value or not _DURATION_RE.match(value):
        raise MixinConfigError("%s: want a Prometheus duration such as 5m or 90s, got %r" % (where, value))
    if not zero_ok and not re.search(r"[1-9]", value):
        raise MixinConfigError("%s: a window must be longer than 0, got %r" % (where, value))
    return value


def _number(value: Any, spec: Threshold, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise MixinConfigError("%s: want a number, got %r" % (where, value))
    if spec.ratio and not 0 <= value <= 1:
        raise MixinConfigError("%s: a ratio between 0 and 1, got %r" % (where, value))
    if value < 0 or (spec.key == "migration_bandwidth_bytes_per_second" and value == 0):
        raise MixinConfigError("%s: must be %s 0, got %r" % (where, ">" if value == 0 else ">=", value))
    return float(value)


def parse_config(doc: Any) -> MixinConfig:
    """The config a parsed knobs document (None for an empty file) sets."""
    if doc is None:
        doc = {}
    doc = _mapping(doc, "knobs file")
    _known(doc, TOP_KEYS, "")
    defaults = MixinConfig()
    selector = doc.get("job_selector", defaults.job_selector)
    if not isinstance(selector, str) or not _SELECTOR_RE.match(selector):
        raise MixinConfigError('job_selector: want PromQL label matchers without braces, such as '
                               'job="virt-exporter", got %r' % (selector,))
    dc_label = doc.get("datacenter_label", defaults.datacenter_label)
    if not isinstance(dc_label, str) or (dc_label and not _LABEL_RE.match(dc_label)):
        raise MixinConfigError("datacenter_label: want a label name (or '' for none), got %r" % (dc_label,))

    runbook = doc.get("runbook_url", defaults.runbook_url)
    if not isinstance(runbook, str) or not runbook or any(c.isspace() or c in "#{}" for c in runbook):
        raise MixinConfigError("runbook_url: want a URL without spaces, braces or #, got %r" % (runbook,))

    groups = dict(defaults.groups)
    section = _mapping(doc.get("groups") or {}, "groups")
    _known(section, OPTIONAL_GROUPS, "groups")
    for key, value in section.items():
        if not isinstance(value, bool):
            raise MixinConfigError("groups.%s: want true or false, got %r" % (key, value))
        groups[key] = value

    thresholds = dict(defaults.thresholds)
    section = _mapping(doc.get("thresholds") or {}, "thresholds")
    _known(section, THRESHOLD_BY_KEY, "thresholds")
    for key, value in section.items():
        thresholds[key] = _number(value, THRESHOLD_BY_KEY[key], "thresholds." + key)

    windows = dict(defaults.windows)
    section = _mapping(doc.get("windows") or {}, "windows")
    _known(section, WINDOWS, "windows")
    for key, value in section.items():
        windows[key] = _duration(value, "windows." + key, zero_ok=False)

    for_ = dict(defaults.for_)
    section = _mapping(doc.get("for") or {}, "for")
    _known(section, FOR, "for")
    for key, value in section.items():
        for_[key] = _duration(value, "for." + key, zero_ok=True)

    boards = dict(defaults.dashboards)
    section = _mapping(doc.get("dashboards") or {}, "dashboards")
    _known(section, DASHBOARD_KNOBS, "dashboards")
    for key, value in section.items():
        if not isinstance(value, str) or not value or any(c in value for c in '"\\\n'):
            raise MixinConfigError("dashboards.%s: want a non-empty string without quotes, got %r" % (key, value))
        boards[key] = value
    return MixinConfig(job_selector=selector.strip(), datacenter_label=dc_label, runbook_url=runbook, groups=groups,
                       thresholds=thresholds, windows=windows, for_=for_, dashboards=boards)


def load_config(path: str) -> MixinConfig:
    try:
        with open(path, encoding="utf-8") as f:
            doc = yaml.safe_load(f)
    except OSError as e:
        raise MixinConfigError("%s: %s" % (path, e.strerror or e)) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = " line %d" % (mark.line + 1) if mark is not None else ""
        raise MixinConfigError("%s:%s not YAML: %s" % (path, where, getattr(e, "problem", None) or e)) from None
    try:
        return parse_config(doc)
    except MixinConfigError as e:
        raise MixinConfigError("%s: %s" % (path, e)) from None


def defaults_yaml() -> str:
    """A knobs file with every key at its default, commented: ``virt-exporter mixin --print-defaults``."""
    d = MixinConfig()
    out = ["# virt-exporter mixin knobs: every key at its default. Keep only what you change.",
           "# PromQL label matchers selecting this exporter's series in every rule and dashboard query",
           "job_selector: %s" % _yaml_scalar(d.job_selector),
           "# the target label naming a host's datacenter (dashboards)",
           "datacenter_label: %s" % d.datacenter_label,
           "# the runbook's address (the repository's docs/runbook.md, or your copy of it)",
           "runbook_url: %s" % _yaml_scalar(d.runbook_url),
           "# optional rule groups", "groups:"]
    out += ["  %s: %s" % (k, "true" if v else "false") for k, v in d.groups.items()]
    out += ["# fleet-wide defaults; a host's own value is an override series (docs/alerts.md)", "thresholds:"]
    for t in THRESHOLDS:
        out.append("  %s: %s  # %s" % (t.key, _yaml_scalar(t.default), t.help))
    out.append("windows:")
    for key, (default, help_) in WINDOWS.items():
        out.append("  %s: %s  # %s" % (key, default, help_))
    out.append("for:")
    out += ["  %s: %s" % kv for kv in d.for_.items()]
    out += ["# dashboards only: refresh, default time range, data source variable's default, time zone", "dashboards:"]
    out += ["  %s: %s" % (k, _yaml_scalar(v)) for k, v in d.dashboards.items()]
    return "\n".join(out) + "\n"


def _yaml_scalar(value: Any) -> str:
    if isinstance(value, float):
        return repr(int(value)) if value.is_integer() else repr(value)
    return "'%s'" % str(value).replace("'", "''")
