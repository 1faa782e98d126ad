"""The exporter as the CLI builds it (cli flags → App), listening on 127.0.0.1, scraped over HTTP, plus
the independent references the CPU and NUMA integration tests compare it with."""

from __future__ import annotations

import contextlib
import re
import socket
import time
import urllib.request
from typing import Dict, Iterator, List, Optional, Tuple

from prometheus_client.parser import text_string_to_metric_families

import testbed as tb
from bounds import time_limit  # noqa: F401  (re-exported for the CPU/NUMA tests)
from virt_exporter import cli
from virt_exporter.app import App
from virt_exporter.collectors import base, load_all
from virt_exporter.source.numa import NumaPlacementReader

SCRAPE_TIMEOUT_S = 30

Series = Dict[Tuple[str, Tuple[Tuple[str, str], ...]], float]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Exporter:
    """A running exporter; ``scrape()`` returns {(name, sorted labels): value}."""

    def __init__(self, app, port: int) -> None:
        self.app = app
        self.url = "http://127.0.0.1:%d/metrics" % port

    @property
    def numa_reader(self) -> NumaPlacementReader:
        """The reader the CLI wired for the numa collector (in-process, for per-vCPU detail)."""
        return self.app.numa_reader

    def scrape(self) -> Series:
        with urllib.request.urlopen(self.url, timeout=SCRAPE_TIMEOUT_S) as r:
            text = r.read().decode()
        out: Series = {}
        for fam in text_string_to_metric_families(text):
            for s in fam.samples:
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
        return out


@contextlib.contextmanager
def running_exporter(*flags: str, numa_interval_s: float = 30.0,
                     only: Optional[Tuple[str, ...]] = None) -> Iterator[Exporter]:
    """The exporter with every collector (or ``only`` these, which keeps its libvirt calls to the
    stats groups they need: cheaper, so better timed on a loaded host)."""
    load_all()
    port = _free_port()
    if only is not None:
        flags += tuple("--%scollector.%s" % ("" if name in only else "no-", name) for name in base.REGISTRY)
    args = cli.build_parser().parse_args(
        ["--web.listen-address", "127.0.0.1:%d" % port, "--libvirt.min-interval", "0.5",
         "--libvirt.timeout", "20", "--collector.numa.interval", str(numa_interval_s), *flags])
    app = App(args)
    app.start()
    try:
        deadline = time.monotonic() + 30
        while not app.connection.up and time.monotonic() < deadline:
            time.sleep(0.1)
        assert app.connection.up, "exporter did not connect to libvirtd within 30 s"
        yield Exporter(app, port)
    finally:
        app.stop()


def value(series: Series, name: str, **labels: str) -> Optional[float]:
    return series.get((name, tuple(sorted(labels.items()))))


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


def cpu_time_ns(guest) -> Tuple[float, int, float]:
    """(monotonic time at the middle of the call, cpu.time, how long the call took) from
    `virsh domstats --cpu-total`."""
    t0 = time.monotonic()
    ns = int(guest.domstats("cpu")["cpu.time"])
    t1 = time.monotonic()
    return (t0 + t1) / 2, ns, t1 - t0


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


def wait_for(predicate, timeout_s: float, what: str, step_s: float = 0.2):
    deadline = time.monotonic() + timeout_s
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %.0f s waiting for %s" % (timeout_s, what))
        time.sleep(step_s)
