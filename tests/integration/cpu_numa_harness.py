"""The exporter as the CLI builds it (cli flags → App), listening on 127.0.0.1, scraped over HTTP, plus
the independent references the CPU and NUMA integration tests compare it with."""

from __future__ import annotations

import contextlib
import re
from typing import Callable, Dict, Iterator, List, Optional, Tuple

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


# The virsh references take ``virsh`` (stdout of `virsh ARGS` on some host): this host's by default,
# the second hypervisor's in tests/migration.
Virsh = Callable[..., str]


def capabilities_cells(virsh: Virsh = tb.virsh) -> Dict[int, List[int]]:
    """{cell: [cpus]} from `virsh capabilities`."""
    xml = virsh("capabilities")
    cells: Dict[int, List[int]] = {}
    for m in re.finditer(r"<cell id='(\d+)'>(.*?)</cell>", xml, re.S):
        cells[int(m.group(1))] = [int(c) for c in re.findall(r"<cpu id='(\d+)'", m.group(2))]
    return cells


def freecell_kib(virsh: Virsh = tb.virsh) -> Dict[str, int]:
    """{cell: free KiB} from `virsh freecell --all`."""
    out = {}
    for line in virsh("freecell", "--all").splitlines():
        m = re.match(r"^\s*(\d+):\s+(\d+) KiB", line)
        if m:
            out[m.group(1)] = int(m.group(2))
    return out


def nodememstats_kib(cell: Optional[int] = None, virsh: Virsh = tb.virsh) -> Dict[str, int]:
    """`virsh nodememstats [--cell N]` as {key: KiB}."""
    args = ["nodememstats"] + (["--cell", str(cell)] if cell is not None else [])
    return {k.strip(): int(v.split()[0]) for k, v in
            (line.split(":", 1) for line in virsh(*args).splitlines() if ":" in line)}


def meminfo_kib() -> Dict[str, int]:
    out = {}
    with open("/proc/meminfo") as f:
        for line in f:
            key, _, rest = line.partition(":")
            out[key] = int(rest.split()[0])
    return out


def vm_rss_kib(pid: int) -> int:
    with open("/proc/%d/status" % pid) as f:
        return status_vm_rss_kib(f.read())


def status_vm_rss_kib(status: str) -> int:
    """VmRSS of a /proc/<pid>/status text."""
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS in %r" % status[:200])


def numa_maps_kib_by_node(numa_maps: str) -> Dict[str, int]:
    """{node: KiB} of a /proc/<pid>/numa_maps text: each mapping's N<node>=<pages> times its
    kernelpagesize_kB (the test's own reading, apart from the exporter's parser)."""
    out: Dict[str, int] = {}
    for line in numa_maps.splitlines():
        page_kib = int(re.search(r"kernelpagesize_kB=(\d+)", line).group(1)) if "kernelpagesize_kB=" in line else 4
        for node, pages in re.findall(r"\bN(\d+)=(\d+)", line):
            out[node] = out.get(node, 0) + int(pages) * page_kib
    return out
