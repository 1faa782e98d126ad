"""``virt-exporter perfmon-replay``: the perfmon engine over recorded values, to tune a config on
history before deploying it (as ``promtool test rules`` does for rules).

The data is CSV: a header ``time,object,<data source>,…``, then one row per object and step —
``time`` in Unix seconds, ``object`` = ``host`` or a domain name, and each data source's value for
that step as perfmon's RRD rows hold it (a fraction for ``cpuN``, bytes/s for vif/vbd/pif …). An
empty cell is a source without a value in that step; ``nan`` is NaN; a source not in the header
does not exist. The host config of the ``--perfmon.config`` file applies to ``host``, its VM config
to every other object; ``fs_usage`` (perfmon's get_percent_fs_usage, which reads the filesystem,
not a data source) takes the row's ``fs_usage`` column when there is one.

The same ObjectMonitor code the exporter runs steps each object, with "now" = the row's time; the
monitors start one step before an object's first row, as perfmon's would have been running then.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import io
import math
from typing import Dict, Iterator, List, Optional, Sequence, TextIO, Tuple

from .config import ObjectConfig, PerfmonFileConfig
from .datasources import DataSources
from .engine import AlarmEvent, ObjectMonitor

FS_USAGE_COLUMN = "fs_usage"


class ReplayError(ValueError):
    """Bad data; str() is one line naming the file and the line."""


@dataclasses.dataclass(frozen=True)
class Row:
    line: int
    time_s: float
    obj: str
    sources: DataSources
    fs_fraction: Optional[float]


def _number(text: str, where: str) -> Optional[float]:
    """A cell: None when empty, NaN for nan, else the number."""
    text = text.strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        raise ReplayError("%s: not a number: %r" % (where, text)) from None
    if math.isinf(value):
        raise ReplayError("%s: infinite value %r (perfmon's RRDs hold no infinity)" % (where, text))
    return value


def parse_csv(stream: TextIO, path: str, step_s: int) -> List[Row]:
    """The rows in time order, checked: a header starting with time,object; numbers; each object's
    rows exactly ``step_s`` apart."""
    reader = csv.reader(stream)
    try:
        header = next(reader)
    except StopIteration:
        raise ReplayError("%s: empty file (want a header time,object,<data source>,...)" % path) from None
    except csv.Error as e:
        raise ReplayError("%s:1: %s" % (path, e)) from None
    header = [h.strip() for h in header]
    if header[:2] != ["time", "object"]:
        raise ReplayError("%s:1: the header must start with time,object (got %s)" % (path, ",".join(header[:2])))
    names = header[2:]
    if any(not n for n in names) or len(set(names)) != len(names):
        raise ReplayError("%s:1: data source names must be present and distinct" % path)
    rows: List[Row] = []
    last: Dict[str, Tuple[float, int]] = {}
    try:
        for record in reader:
            line = reader.line_num
            where = "%s:%d" % (path, line)
            if not record or all(not c.strip() for c in record):
                continue
            if len(record) != len(header):
                raise ReplayError("%s: %d fields, the header has %d" % (where, len(record), len(header)))
            time_s = _number(record[0], where + ": time")
            obj = record[1].strip()
            if time_s is None or math.isnan(time_s):
                raise ReplayError("%s: no time" % where)
            if not obj:
                raise ReplayError("%s: no object" % where)
            if obj in last and time_s - last[obj][0] != step_s:
                raise ReplayError("%s: %s's rows at line %d and here are %g s apart; --perfmon.step is %d s"
                                  % (where, obj, last[obj][1], time_s - last[obj][0], step_s))
            last[obj] = (time_s, line)
            values: Dict[str, float] = {}
            unavailable = set()
            fs_fraction = None
            for name, cell in zip(names, record[2:]):
                value = _number(cell, "%s: %s" % (where, name))
                if name == FS_USAGE_COLUMN:
                    fs_fraction = value
                elif value is None:
                    unavailable.add(name)
                else:
                    values[name] = value
            rows.append(Row(line, time_s, obj, DataSources(values, frozenset(unavailable)), fs_fraction))
    except csv.Error as e:
        raise ReplayError("%s:%d: %s" % (path, reader.line_num, e)) from None
    rows.sort(key=lambda r: (r.time_s, r.line))
    return rows


def replay(config: PerfmonFileConfig, rows: Sequence[Row], step_s: int) -> Iterator[AlarmEvent]:
    """Every alarm attempt, in time order."""
    monitors: Dict[str, ObjectMonitor] = {}
    for row in rows:
        monitor = monitors.get(row.obj)
        if monitor is None:
            object_type = "host" if row.obj == "host" else "vm"
            monitor = monitors[row.obj] = ObjectMonitor(object_type, row.obj, "" if object_type == "host" else row.obj)
            object_config: Optional[ObjectConfig] = config.host if object_type == "host" else config.vm
            if object_config is not None:
                monitor.apply(object_config, row.time_s - step_s)
        yield from monitor.step(row.sources, row.time_s, step_s, functools.partial(_given, row.fs_fraction))


def _given(value: Optional[float]) -> Optional[float]:
    return value


def event_json(event: AlarmEvent, show_inhibited: bool) -> Dict[str, object]:
    out: Dict[str, object] = {"time": event.time_s, "object": event.domain or "host", "variable": event.variable,
                              "value": event.value, "priority": str(event.priority)}
    if show_inhibited and not event.sent:
        out["inhibited"] = True
    return out


def read_data(path: str, stdin: TextIO) -> TextIO:
    if path == "-":
        return stdin
    try:
        with open(path, newline="", encoding="utf-8") as f:
            return io.StringIO(f.read())
    except (OSError, UnicodeDecodeError) as e:
        raise ReplayError("%s: %s" % (path, getattr(e, "strerror", None) or e)) from None
