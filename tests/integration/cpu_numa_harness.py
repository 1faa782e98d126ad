"""The exporter as the CLI builds it (cli flags → App), listening on 127.0.0.1, scraped over HTTP, plus
the independent references the CPU and NUMA integration tests compare it with."""

from __future__ import annotations

import contextlib
import re
from typing import Dict, Iterator, List, Optional, Tuple

import inprocess
import scrape
import testbed as tb
from bounds import wait_for  # noqa: F401  (re-exported for the CPU/NUMA tests)

Series = scrape.Series
value = scrape.value


@contextlib.contextmanager
def running_exporter(*flags: str, numa_interval_s: float = 30.0,
                     only: Optional[Tuple[str, ...]] = None) -> Iterator[inprocess.InProcessExporter]:
    """The in-process exporter with every collector (or ``only`` these, which keeps its libvirt calls
    to the stats groups they need: cheaper, so better timed on a loaded host)."""
    with inprocess.running_exporter("--collector.numa.interval", str(numa_interval_s), *flags,
                                    only=only) as exp:
        yield exp


def label_values(series: Series, name: str, label: str, **where: str) -> Dict[str, float]:
    """{value of ``label``: sample value} for the series of ``name`` whose other labels match ``where``."""
    out = {}
    for (n, labels), v in series.items():
        d = dict(labels)
        if n == name and all(d.get(k) == w for k, w in where.items()):
            out[d[label]] = v
    return out


# --- references -----------------------------------------------------------------------------------

def nodeinfo_core_mhz() -> int:
    m = re.search(r"CPU frequency:\s+(\d+)", tb.virsh("nodeinfo"))
    assert m
    return int(m.group(1))


def proc_stat_busy_total() -> Tuple[int, int]:
    """Neat's busy (user+nice+system) and total (first seven columns) jiffies of /proc/stat's cpu line."""
    with open("/proc/stat") as f:
        fields = f.readline().split()
    assert fields[0] == "cpu"
    cols = [int(v) for v in fields[1:8]]
    return cols[0] + cols[1] + cols[2], sum(cols)


def capabilities_cells() -> Dict[int, List[int]]:
    """{cell: [cpus]} from `virsh capabilities`."""
    xml = tb.virsh("capabilities")
    cells: Dict[int, List[int]] = {}
    for m in re.finditer(r"<cell id='(\d+)'>(.*?)</cell>", xml, re.S):
        cells[int(m.group(1))] = [int(c) for c in re.findall(r"<cpu id='(\d+)'", m.group(2))]
    return cells


def meminfo_kib() -> Dict[str, int]:
    out = {}
    with open("/proc/meminfo") as f:
        for line in f:
            key, _, rest = line.partition(":")
            out[key] = int(rest.split()[0])
    return out


def vm_rss_kib(pid: int) -> int:
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS for pid %d" % pid)


