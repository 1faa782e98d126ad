"""Perfmon's XML configuration: parsing, perfmon's per-variable defaults, validation.

A per-object config is XenServer perfmon's document, unchanged::

    <config>
      <variable>
        <name value="cpu_usage"/>
        <alarm_trigger_level value="0.5"/>
        <alarm_trigger_period value="60"/>
      </variable>
    </config>

It comes from a domain's ``<metadata>`` (element ``config`` under :data:`PERFMON_METADATA_NS`) or from
the file given by ``--perfmon.config``, whose format is::

    <perfmon>
      <host>                 <!-- optional: the host's config -->
        <config>…</config>
      </host>
      <vm>                   <!-- optional: the config of every VM without one in its metadata -->
        <config>…</config>
      </vm>
    </perfmon>

Element names are compared by local name, so a document works whether or not its elements are in the
namespace (libvirt puts every element it stores under ``<metadata>`` into it).

Validation is all or nothing per object (perfmon's seed would keep the variables parsed before a bad
one): an error rejects the whole document with one line naming the variable and the setting.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Dict, FrozenSet, List, Optional, Tuple, Union

from lxml import etree

from ..namespaces import PERFMON_METADATA_NS as _PERFMON_METADATA_NS
from ..usage import one_line

# Namespace of the perfmon config in a domain's <metadata> (defined beside the other metadata namespaces,
# re-exported here); virsh takes it as --uri, with --key perfmon:
#   virsh metadata DOMAIN --uri urn:virt-exporter:perfmon:1 --key perfmon \
#       --set '<config><variable>…</variable></config>' --live --config
PERFMON_METADATA_NS = _PERFMON_METADATA_NS
PERFMON_METADATA_KEY = "perfmon"

OBJECT_TYPES = ("vm", "host")
CONSOLIDATION_FUNCTIONS = ("sum", "average", "max", "get_percent_fs_usage")
TAGS = ("name", "alarm_trigger_level", "alarm_trigger_sense", "alarm_trigger_period",
        "alarm_auto_inhibit_period", "alarm_priority", "consolidation_fn", "rrd_regex")

# Bounds that keep hostile or mistyped documents cheap; perfmon had none.
MAX_DOCUMENT_BYTES = 64 * 1024
MAX_VARIABLES = 64
MAX_REGEX_CHARS = 512
MAX_PERIOD_S = 2 ** 31 - 1

# perfmon's VM defaults, with the documented libvirt extension: disk_usage also matches virtio (vd)
# and SCSI (sd) targets.
VM_DEFAULT_REGEX = {
    "cpu_usage": "cpu[0-9]+",
    "network_usage": "vif_[0-9]+_[rt]x",
    "disk_usage": "vbd_(xvd|hd|vd|sd)[a-z]+_(read|write)",
    "fs_usage": "__DUMMY__",  # perfmon: "match nothing"; get_percent_fs_usage ignores the values
}
# perfmon's host defaults, with the documented extension: network_usage also matches today's physical
# interface names (ens3, eno1, enp1s0, enx…, em1, bond0) and never virtual ones (lo, tap, vnet, bridges).
HOST_DEFAULT_REGEX = {
    "cpu_usage": "cpu[0-9]+",
    "network_usage": "^pif_(eth[0-9]+|en[a-z][a-z0-9]*|em[0-9]+|bond[0-9]+)_[rt]x$",
    "fs_usage": "__DUMMY__",
}


class PerfmonConfigError(ValueError):
    """A perfmon config that cannot be used; ``str()`` is one readable line."""


@dataclasses.dataclass(frozen=True)
class VariableConfig:
    """One ``<variable>``, defaults filled in and values converted.

    ``identity`` is what perfmon compares to decide whether a variable's config changed (its XML,
    here without whitespace, comments and namespace prefixes): same identity → the state is kept.
    ``explicit`` names the tags the document set (the rest are perfmon's defaults).
    """

    name: str
    rrd_regex: str
    consolidation_fn: str
    alarm_trigger_level: float
    alarm_trigger_sense: str  # the raw value: "high" alarms above the level, anything else below
    alarm_trigger_period_s: int
    alarm_auto_inhibit_period_s: int
    alarm_priority: str  # as perfmon passes it on; an integer is written canonically ("05" → "5")
    explicit: FrozenSet[str]
    identity: Tuple[Tuple[str, Optional[str]], ...]
    xml: str

    @property
    def sense_high(self) -> bool:
        return self.alarm_trigger_sense == "high"

    @property
    def regex(self) -> "re.Pattern[str]":
        return _compile(self.rrd_regex)

    def is_bad(self, value: float) -> bool:
        """perfmon's test_level: strictly above (high) or strictly below (otherwise) the level."""
        if self.sense_high:
            return value > self.alarm_trigger_level
        return value < self.alarm_trigger_level


@dataclasses.dataclass(frozen=True)
class ObjectConfig:
    """A parsed per-object document: its variables in document order (a repeated name: the last wins,
    as in perfmon) and warnings that did not reject it."""

    object_type: str
    variables: Tuple[VariableConfig, ...]
    warnings: Tuple[str, ...] = ()
    # The <variable> identities in document order, repeats included, for perfmon's reconciliation.
    sequence: Tuple[VariableConfig, ...] = ()


@dataclasses.dataclass(frozen=True)
class PerfmonFileConfig:
    """The ``--perfmon.config`` file: the host's config and the default VM config, each optional."""

    path: str
    host: Optional[ObjectConfig]
    vm: Optional[ObjectConfig]
    host_xml: Optional[str] = None
    vm_xml: Optional[str] = None


_regex_cache: Dict[str, "re.Pattern[str]"] = {}


def _compile(pattern: str) -> "re.Pattern[str]":
    compiled = _regex_cache.get(pattern)
    if compiled is None:
        compiled = re.compile(pattern)
        if len(_regex_cache) < 4096:
            _regex_cache[pattern] = compiled
    return compiled


def default_setting(object_type: str, variable: str, tag: str) -> str:
    """perfmon's ``get_default_variable_config`` of VMMonitor / HOSTMonitor, as the raw string.

    Raises PerfmonConfigError where perfmon has no default (the tag is then required).
    """
    fs = variable == "fs_usage"  # VM defaults in perfmon; the host config takes the same ones here
    if tag == "consolidation_fn":
        if variable == "cpu_usage":
            return "average"
        if fs:
            return "get_percent_fs_usage"
        return "sum"
    if tag == "rrd_regex":
        table = VM_DEFAULT_REGEX if object_type == "vm" else HOST_DEFAULT_REGEX
        if variable in table:
            return table[variable]
        raise PerfmonConfigError(f"variable {variable}: no default rrd_regex - please specify one")
    if tag == "alarm_trigger_period":
        return "60"
    if tag == "alarm_auto_inhibit_period":
        return "604800" if fs else "3600"
    if tag == "alarm_trigger_level":
        if fs:
            return "0.9"
        raise PerfmonConfigError(f"variable {variable}: no default alarm_trigger_level - please specify one")
    if tag == "alarm_trigger_sense":
        return "high"
    if tag == "alarm_priority":
        return "5"
    raise PerfmonConfigError(f"variable {variable}: no default available for tag {tag}")


def safe_parser() -> etree.XMLParser:
    """An lxml parser that resolves no entities, loads no DTD and never touches the network."""
    return etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, dtd_validation=False,
                           huge_tree=False, remove_comments=True, remove_pis=True, recover=False)


def parse_xml(text: Union[str, bytes], what: str) -> etree._Element:
    """The root element of a small, DTD-free document, or PerfmonConfigError."""
    data = text.encode("utf-8") if isinstance(text, str) else bytes(text)
    if len(data) > MAX_DOCUMENT_BYTES:
        raise PerfmonConfigError(f"{what}: document is {len(data)} bytes, more than {MAX_DOCUMENT_BYTES}")
    if b"<!DOCTYPE" in data:
        # Checked before parsing: entities are the only use of a DTD here, and libxml2 would still
        # work through an expansion attack's declarations before refusing it.
        raise PerfmonConfigError(f"{what}: a DOCTYPE is not allowed")
    try:
        root = etree.fromstring(data, safe_parser())
    except etree.XMLSyntaxError as e:
        raise PerfmonConfigError(f"{what}: XML parse error: {one_line(str(e))}") from None
    except ValueError as e:  # e.g. a str with an encoding declaration
        raise PerfmonConfigError(f"{what}: XML parse error: {one_line(str(e))}") from None
    docinfo = root.getroottree().docinfo
    if docinfo.doctype or docinfo.internalDTD is not None:  # e.g. a DOCTYPE in another encoding
        raise PerfmonConfigError(f"{what}: a DOCTYPE is not allowed")
    return root


def _local(el: etree._Element) -> Optional[str]:
    tag = el.tag
    if not isinstance(tag, str):
        return None
    return etree.QName(tag).localname


def _descendants(el: etree._Element, name: str) -> List[etree._Element]:
    """Elements below ``el`` (and ``el`` itself) with local name ``name``, in document order,
    as minidom's getElementsByTagName finds them in the seed."""
    return [e for e in el.iter() if _local(e) == name]


def _show(value: str) -> str:
    if len(value) > 60:
        value = value[:57] + "..."
    return repr(value)


def _parse_int_s(variable: str, tag: str, raw: str) -> int:
    # int() as in the seed, but only plain decimal integers: no "1_000", no 10,000-digit numbers.
    if not re.fullmatch(r"\s*[+-]?[0-9]{1,12}\s*", raw):
        raise PerfmonConfigError(f"variable {variable}: {tag} {_show(raw)} is not an integer number of seconds")
    value = int(raw)
    # perfmon's int() takes a negative period too (a negative trigger period alarms at the first bad
    # step, a negative inhibit period inhibits nothing): accepted, with a warning (parse_config_element)
    if not -MAX_PERIOD_S <= value <= MAX_PERIOD_S:
        raise PerfmonConfigError(f"variable {variable}: {tag} {value} is out of range "
                                 f"-{MAX_PERIOD_S}..{MAX_PERIOD_S} s")
    return value


def parse_variable(el: etree._Element, object_type: str) -> VariableConfig:
    """One ``<variable>`` element → VariableConfig, with perfmon's defaults; PerfmonConfigError."""
    names = _descendants(el, "name")
    if not names:
        raise PerfmonConfigError("variable missing 'name' tag")
    name = names[0].get("value")
    if not name or not name.strip():
        raise PerfmonConfigError("variable has a 'name' tag without a value")
    if len(name) > 128 or not name.isprintable():
        raise PerfmonConfigError(f"variable {_show(name)}: name must be at most 128 printable characters")

    explicit = set()

    def get_value(tag: str) -> str:
        found = _descendants(el, tag)
        if found:
            explicit.add(tag)
            # perfmon's getAttribute('value') reads a missing attribute as ''
            return found[0].get("value", "")
        return default_setting(object_type, name, tag)

    rrd_regex = get_value("rrd_regex")
    consolidation_fn = get_value("consolidation_fn")
    level_raw = get_value("alarm_trigger_level")
    period_raw = get_value("alarm_trigger_period")
    inhibit_raw = get_value("alarm_auto_inhibit_period")
    sense = get_value("alarm_trigger_sense")
    priority_raw = get_value("alarm_priority")

    if len(rrd_regex) > MAX_REGEX_CHARS:
        raise PerfmonConfigError(f"variable {name}: rrd_regex is longer than {MAX_REGEX_CHARS} characters")
    try:
        _compile(rrd_regex)
    except (re.error, RecursionError, OverflowError, ValueError) as e:
        raise PerfmonConfigError(f"variable {name}: regex {_show(rrd_regex)} does not compile: {e}") from None
    if consolidation_fn not in CONSOLIDATION_FUNCTIONS:
        raise PerfmonConfigError(f"variable {name}: consolidation function {_show(consolidation_fn)} not supported "
                                 f"(one of {', '.join(CONSOLIDATION_FUNCTIONS)})")
    period_s = _parse_int_s(name, "alarm_trigger_period", period_raw)
    inhibit_s = _parse_int_s(name, "alarm_auto_inhibit_period", inhibit_raw)
    try:
        # float() as in the seed, whose Python 2 took no "_" between digits (Python 3's does)
        if len(level_raw) > 64 or "_" in level_raw:
            raise ValueError
        level = float(level_raw)
    except ValueError:
        raise PerfmonConfigError(f"variable {name}: alarm_trigger_level {_show(level_raw)} is not a number") from None
    # perfmon passes the priority to the alarm message as it is, any string; an integer is written
    # canonically. Bounded as a variable's name is: it becomes a label value.
    if re.fullmatch(r"\s*[+-]?[0-9]{1,9}\s*", priority_raw):
        priority = str(int(priority_raw))
    elif len(priority_raw) > 128 or not priority_raw.isprintable():
        raise PerfmonConfigError(f"variable {name}: alarm_priority must be at most 128 printable characters")
    else:
        priority = priority_raw

    identity = tuple((_local(e) or "", e.get("value")) for e in el.iter() if _local(e) and e is not el)
    return VariableConfig(
        name=name, rrd_regex=rrd_regex, consolidation_fn=consolidation_fn, alarm_trigger_level=level,
        alarm_trigger_sense=sense, alarm_trigger_period_s=period_s, alarm_auto_inhibit_period_s=inhibit_s,
        alarm_priority=priority, explicit=frozenset(explicit), identity=identity,
        xml=etree.tostring(el, encoding="unicode", with_tail=False))


def parse_config_element(root: etree._Element, object_type: str) -> ObjectConfig:
    """A ``<config>`` element → ObjectConfig; PerfmonConfigError on the first bad variable."""
    if object_type not in OBJECT_TYPES:
        raise ValueError("object_type must be one of " + ", ".join(OBJECT_TYPES))
    if _local(root) != "config":
        raise PerfmonConfigError(f"root element is <{_local(root)}>, expected <config>")
    nodes = _descendants(root, "variable")
    if len(nodes) > MAX_VARIABLES:
        raise PerfmonConfigError(f"{len(nodes)} variables, more than {MAX_VARIABLES}")
    sequence: List[VariableConfig] = []
    warnings: List[str] = []
    for node in nodes:
        var = parse_variable(node, object_type)
        sequence.append(var)
        if var.alarm_trigger_period_s < 0 or var.alarm_auto_inhibit_period_s < 0:
            warnings.append(f"variable {var.name}: a negative period (trigger {var.alarm_trigger_period_s} s, "
                            f"inhibit {var.alarm_auto_inhibit_period_s} s) is taken as perfmon takes it: a "
                            "negative trigger period alarms at the first bad step, a negative inhibit period "
                            "inhibits nothing")
        if not var.rrd_regex:
            warnings.append(f"variable {var.name}: rrd_regex is empty, so it matches every data source, as in "
                            "perfmon")
        if not math.isfinite(var.alarm_trigger_level):
            warnings.append(f"variable {var.name}: alarm_trigger_level {var.alarm_trigger_level} is not finite; "
                            "values are compared with it as perfmon compares them")
        if not re.fullmatch(r"-?[0-9]+", var.alarm_priority):
            warnings.append(f"variable {var.name}: alarm_priority {_show(var.alarm_priority)} is not an integer: "
                            "passed on as it is, as perfmon does, with severity "
                            f"{severity_of_priority(var.alarm_priority)}")
        if var.alarm_trigger_sense not in ("high", "low"):
            warnings.append(f"variable {var.name}: alarm_trigger_sense {_show(var.alarm_trigger_sense)} "
                            "is not 'high', so it means 'low' (alarm below the level), as in perfmon")
        unknown = sorted({t for t, _ in var.identity if t not in TAGS})
        if unknown:
            warnings.append(f"variable {var.name}: unknown tags ignored: {', '.join(unknown)}")
    last: Dict[str, VariableConfig] = {}
    for var in sequence:
        if var.name in last:
            warnings.append(f"variable {var.name} appears more than once: the last one is used")
        last.pop(var.name, None)
        last[var.name] = var
    if not nodes:
        warnings.append("no <variable> elements: nothing is monitored")
    # Order of first appearance, as perfmon's list ends up.
    order = []
    for var in sequence:
        if var.name not in order:
            order.append(var.name)
    return ObjectConfig(object_type, tuple(last[n] for n in order), tuple(dict.fromkeys(warnings)), tuple(sequence))


def parse_object_config(text: Union[str, bytes], object_type: str) -> ObjectConfig:
    """A per-object perfmon document (``<config>…</config>``) → ObjectConfig, or PerfmonConfigError."""
    return parse_config_element(parse_xml(text, "perfmon config"), object_type)


def parse_perfmon_file(text: Union[str, bytes], path: str = "<string>") -> PerfmonFileConfig:
    """The ``--perfmon.config`` document (see the module docstring) → PerfmonFileConfig."""
    try:
        root = parse_xml(text, path)
        if _local(root) != "perfmon":
            raise PerfmonConfigError(f"root element is <{_local(root)}>, expected <perfmon>")
        sections: Dict[str, Tuple[ObjectConfig, str]] = {}
        for child in root:
            kind = _local(child)
            if kind is None:
                continue
            if kind not in OBJECT_TYPES:
                raise PerfmonConfigError(f"unexpected <{kind}> in <perfmon>: expected <host> and/or <vm>")
            if kind in sections:
                raise PerfmonConfigError(f"<{kind}> appears more than once")
            configs = [c for c in child if _local(c) is not None]
            if len(configs) != 1 or _local(configs[0]) != "config":
                raise PerfmonConfigError(f"<{kind}> must contain exactly one <config> element")
            try:
                parsed = parse_config_element(configs[0], kind)
            except PerfmonConfigError as e:
                raise PerfmonConfigError(f"{kind} config: {e}") from None
            sections[kind] = (parsed, etree.tostring(configs[0], encoding="unicode", with_tail=False))
    except PerfmonConfigError as e:
        message = str(e)
        if not message.startswith(path):
            message = f"{path}: {message}"
        raise PerfmonConfigError(message) from None
    host = sections.get("host")
    vm = sections.get("vm")
    return PerfmonFileConfig(path=path, host=host[0] if host else None, vm=vm[0] if vm else None,
                             host_xml=host[1] if host else None, vm_xml=vm[1] if vm else None)


def load_perfmon_file(path: str) -> PerfmonFileConfig:
    """Read and validate the ``--perfmon.config`` file; PerfmonConfigError (one line) when unusable."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_DOCUMENT_BYTES + 1)
    except OSError as e:
        raise PerfmonConfigError(f"{path}: {e.strerror or e}") from None
    return parse_perfmon_file(data, path)


def severity_of_priority(priority: str) -> str:
    """XenServer's alarm priorities as Alertmanager severities: 1-2 critical, 3-4 warning, 5 info
    (below 1 counts as critical, above 5 as info); a priority that is no integer, info, as
    alerts/optional/perfmon.rules.yml maps it."""
    try:
        number = int(priority)
    except ValueError:
        return "info"
    if number <= 2:
        return "critical"
    if number <= 4:
        return "warning"
    return "info"
