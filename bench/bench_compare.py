"""Side by side on the real KVM test bed: bare libvirt calls, this exporter, Debian's Go exporter.

    .venv/bin/python bench/bench_compare.py [--guests 10,20] [--rounds 30] [--concurrency 2,3,4,6] [--per-group]
    .venv/bin/python bench/bench_compare.py --hypervisor2 ...   the same on the second hypervisor

With --hypervisor2 the guests run on the second hypervisor (scripts/hypervisor2.sh: libvirt 11 /
QEMU 10 in a container), the bare calls and this exporter reach it over TCP on loopback, and the Go
exporter is Debian 13's, run inside that container on its unix socket. A column ours-in runs this
exporter inside the container too (Debian 13's Python 3.13 and libraries, the unix socket), as the
Go exporter runs.

For each guest count it defines that many blank guests (thin qcow2 + iothread, ethernet interface,
balloon — as tests/testbed.py makes them), then runs interleaved rounds of:
  bare-1      one getAllDomainStats call with the exporter's groups and flags (NOWAIT, backing chain)
  split-K     the exporter's own split: listAllDomains + K concurrent domainListGetStats calls,
              each on its own connection, for every K of --concurrency (default: 2,3,4,6 and the
              exporter's default)
  ours-K      this exporter's scrape over HTTP with --libvirt.concurrency K (fresh sample each
              time: --libvirt.min-interval 0)
  ours        this exporter with its defaults (the figure the README states)
  ours-nobk   the same with --no-libvirt.backing-chain
  ours-in     (--hypervisor2 only) this exporter with its defaults inside the container
  go          prometheus-libvirt-exporter's scrape over HTTP
and prints median / p95 per column, ratios to the Go exporter, the exporter's own overhead (scrape
time minus the libvirt stats time it reports), and how many series each exporter returns.
--per-group also times each stats group alone (with state), as one call and split.
Absolute figures swing with the machine's load: compare only within one run. Not a test.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Callable, Dict, List, Sequence

import libvirt

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from exporterproc import ExporterProcess, free_port  # noqa: E402
from hypervisor2 import InsideExporter  # noqa: E402
from scrape import Samples  # noqa: E402
from testbed import URI, Testbed, ensure_daemon  # noqa: E402
from virt_exporter.app import default_concurrency  # noqa: E402
from virt_exporter.source import bulk  # noqa: E402

GROUPS = ("state", "cpu-total", "balloon", "vcpu", "interface", "block")
GO_EXPORTER = "/usr/bin/prometheus-libvirt-exporter"


def pct(values: List[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def http_get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=60) as r:
        return r.read()


class GoExporter:
    def __init__(self, hypervisor2: bool = False) -> None:
        self.port = free_port()
        self.hypervisor2 = hypervisor2
        argv = [GO_EXPORTER, "--web.listen-address", "127.0.0.1:%d" % self.port]
        if hypervisor2:  # Debian 13's, beside its libvirtd (host network: the port is ours too)
            argv = hypervisor2_command("go-exporter", str(self.port))
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.url = "http://127.0.0.1:%d/metrics" % self.port
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                http_get(self.url)
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("Go exporter did not start")

    def stop(self) -> None:
        if self.hypervisor2:
            subprocess.run(hypervisor2_command("go-exporter-stop"), check=False, timeout=30)
        self.proc.terminate()
        self.proc.wait(timeout=10)


def hypervisor2_command(*args: str) -> List[str]:
    return ["bash", str(REPO / "scripts" / "hypervisor2.sh"), *args]


def start_guests(bed: Testbed, count: int, uri: str) -> list:
    """Blank guests on ``uri``: made (disk, XML) by the test bed, started there."""
    if uri == URI:
        return [bed.make_guest(kind="blank") for _ in range(count)]
    made = [bed.make_guest(kind="blank", start=False) for _ in range(count)]
    for g in made:
        subprocess.run(["virsh", "-q", "-c", uri, "create", str(g.directory / "domain.xml")], check=True,
                       capture_output=True, timeout=120)
    return made


def stop_guests(guests: list, uri: str) -> None:
    if uri != URI:
        for g in guests:
            subprocess.run(["virsh", "-q", "-c", uri, "destroy", g.name], check=False, capture_output=True,
                           timeout=120)

def series_count(body: bytes, prefix: str = "libvirt_") -> int:
    return sum(1 for line in body.decode().splitlines() if line.startswith(prefix))


def settle(conn: libvirt.virConnect, names: set, limit_s: float = 300.0) -> None:
    """Wait until the new guests are through their firmware (~5 s of CPU each on this software KVM):
    while they boot they take the cores the timed calls need. Settled = together below a tenth of a
    core, or 2 % of one per guest, over 3 s."""
    def guests_cpu_s() -> float:
        stats = conn.getAllDomainStats(libvirt.VIR_DOMAIN_STATS_CPU_TOTAL, 0)
        return sum(st.get("cpu.time", 0) for dom, st in stats if dom.name() in names) / 1e9

    t0 = time.monotonic()
    while time.monotonic() - t0 < limit_s:
        before = guests_cpu_s()
        time.sleep(3)
        rate = (guests_cpu_s() - before) / 3
        # once through the firmware, a blank guest keeps ~1 % of a core here (its boot retries)
        if rate < max(0.1, 0.02 * len(names)):
            print("guests settled after %.0f s (%.2f of a core together)" % (time.monotonic() - t0, rate))
            return
    print("guests still use %.2f of a core after %.0f s: figures below are from a busy host" % (rate, limit_s))


def timed_split(conns: List[libvirt.virConnect], groups: Sequence[str], k: int, backing: bool) -> float:
    """Seconds for the exporter's split done bare: list the domains, then k concurrent
    domainListGetStats calls, each on its own connection (conns[1..k])."""
    t0 = time.perf_counter()
    doms = conns[0].listAllDomains(0)
    threads = [threading.Thread(target=bulk.domain_list_stats, args=(conns[1 + i], doms[i::k], groups, backing))
               for i in range(k) if doms[i::k]]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - t0


def group_costs(conns: List[libvirt.virConnect], concurrency: int, rounds: int) -> None:
    """What each stats group adds to the bare call (asked with state alone, NOWAIT), one call and
    split: libvirtd makes QEMU monitor round trips per domain for every group but state and
    interface, which is where the time goes."""
    cases = {g: ["state"] + ([g] if g != "state" else []) for g in GROUPS}
    times: Dict[str, Dict[int, List[float]]] = {g: {1: [], concurrency: []} for g in cases}
    for _ in range(rounds):
        for g, groups in cases.items():
            for k in (1, concurrency):
                times[g][k].append(timed_split(conns, groups, k, backing=False))
    print("per stats group (with state), median ms: %s" % ", ".join(
        "%s %.1f/%.1f" % (g, statistics.median(t[1]) * 1000, statistics.median(t[concurrency]) * 1000)
        for g, t in times.items()), "(one call / split %d)" % concurrency)


def measure(guests: int, rounds: int, sweep: List[int], per_group: bool = False, uri: str = URI) -> None:
    bed = Testbed()
    made: list = []
    try:
        print("\n== %d blank guests on %s (defining…)" % (guests, uri), flush=True)
        made = start_guests(bed, guests, uri)
        conns = [libvirt.openReadOnly(uri) for _ in range(max(sweep) + 1)]
        settle(conns[0], {g.name for g in made})
        names = {g.name for g in made}

        def bare_single() -> float:
            t0 = time.perf_counter()
            bulk.get_all_domain_stats(conns[0], GROUPS, True)
            return time.perf_counter() - t0

        def bare_split(k: int) -> Callable[[], float]:
            return lambda: timed_split(conns, GROUPS, k, backing=True)

        base = ["--libvirt.uri", uri, "--libvirt.min-interval", "0", "--log.level", "warn"]
        processes: Dict[str, ExporterProcess] = {
            "ours-%d" % k: ExporterProcess(base + ["--libvirt.concurrency", str(k)]).start() for k in sweep}
        processes["ours"] = ExporterProcess(base).start()
        processes["ours-nobk"] = ExporterProcess(base + ["--no-libvirt.backing-chain"]).start()
        if uri != URI:
            processes["ours-in"] = InsideExporter(base[2:]).start()  # its own libvirtd's default URI
        go = GoExporter(hypervisor2=uri != URI)
        own_overhead: List[float] = []
        bodies: Dict[str, bytes] = {}

        def scrape(name: str, url: str, track_overhead: bool = False) -> Callable[[], float]:
            def run() -> float:
                t0 = time.perf_counter()
                body = http_get(url)
                elapsed = time.perf_counter() - t0
                bodies[name] = body
                if track_overhead:
                    s = Samples.parse(body.decode())
                    libvirt_s = s.get("libvirt_exporter_bulk_stats_duration_seconds") or 0.0
                    own_overhead.append((elapsed - libvirt_s) / elapsed)
                return elapsed
            return run

        columns: Dict[str, Callable[[], float]] = {"bare-1": bare_single}
        for k in sweep:
            columns["split-%d" % k] = bare_split(k)
        for name, proc in processes.items():
            columns[name] = scrape(name, proc.url + "/metrics", track_overhead=name == "ours")
        columns["go"] = scrape("go", go.url)
        for fn in columns.values():  # warm-up round
            fn()
        own_overhead.clear()
        times: Dict[str, List[float]] = {k: [] for k in columns}
        for _ in range(rounds):
            for name, fn in columns.items():
                times[name].append(fn())
        if per_group:
            group_costs(conns, concurrency=max(k for k in sweep if k <= 4), rounds=max(5, rounds // 2))
        go_med = statistics.median(times["go"])
        print("load after the rounds: %s" % " ".join("%.2f" % x for x in os.getloadavg()))
        print("%-11s %9s %9s %9s" % ("", "median ms", "p95 ms", "/ go"))
        for name, ts in times.items():
            med = statistics.median(ts)
            print("%-11s %9.1f %9.1f %9.2f" % (name, med * 1000, pct(ts, 0.95) * 1000, med / go_med))
        print("own overhead of ours (scrape minus its libvirt stats time): median %.1f %% of the scrape"
              % (100 * statistics.median(own_overhead)))
        ours_body, go_body = bodies["ours"].decode(), bodies["go"].decode()
        mine = sum(1 for line in ours_body.splitlines()
                   if line.startswith("libvirt_domain") and any('"%s"' % n in line for n in names))
        theirs = sum(1 for line in go_body.splitlines()
                     if line.startswith("libvirt_domain") and any('"%s"' % n in line for n in names))
        print("series for these guests: ours %d, go %d; whole output: ours %d libvirt_* (%d bytes), "
              "go %d libvirt_* (%d bytes)" % (mine, theirs, series_count(bodies["ours"]), len(bodies["ours"]),
                                              series_count(bodies["go"]), len(bodies["go"])))
        for p in processes.values():
            p.stop()
        go.stop()
        for c in conns:
            c.close()
    finally:
        stop_guests(made, uri)
        bed.cleanup()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--guests", default="10,20")
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--per-group", action="store_true", help="also time each stats group alone")
    ap.add_argument("--concurrency", default="2,3,4,6",
                    help="the split sizes to compare, besides the exporter's default")
    ap.add_argument("--hypervisor2", action="store_true",
                    help="measure on the second hypervisor (libvirt 11 / QEMU 10, scripts/hypervisor2.sh)")
    args = ap.parse_args()
    sweep = sorted({int(x) for x in args.concurrency.split(",")} | {default_concurrency()})
    ensure_daemon()
    uri = URI
    if args.hypervisor2:
        uri = subprocess.run(hypervisor2_command("up"), capture_output=True, text=True, check=True).stdout.split()[-1]
    print("host: %d CPUs, load %s; exporter default concurrency %d" % (
        os.cpu_count() or 0, " ".join("%.2f" % x for x in os.getloadavg()), default_concurrency()))
    for n in [int(x) for x in args.guests.split(",")]:
        measure(n, args.rounds, sweep, args.per_group, uri)
    return 0


if __name__ == "__main__":
    sys.exit(main())
