"""Scale and idle cost, with real bulk stats recorded from the test bed and replayed at N domains
through the exporter's own code path (bench/replay.py replaces only the libvirt connection).

    .venv/bin/python bench/bench_scale.py [--domains 100,500,1000,2000] [--scrapes 15] [--idle-seconds 60]

Table 1: per N, the median scrape time over HTTP (fresh sample each time), output bytes and peak RSS
of the exporter process (VmHWM). Table 2: CPU used by the exporter over --idle-seconds while it is
scraped every 15 s with 100 domains, as a share of one core. Not a test.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import List, Tuple

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "bench"))

import replay  # noqa: E402

from exporterproc import free_port  # noqa: E402
from testbed import Testbed, ensure_daemon, make_standard_guests  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")


def record_from_testbed(path: str) -> None:
    ensure_daemon()
    bed = Testbed()
    try:
        make_standard_guests(bed)
        time.sleep(2)
        replay.record(path)
    finally:
        bed.cleanup()


class ReplayedExporter:
    def __init__(self, recording: str, domains: int, *extra: str) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, str(REPO / "bench" / "replay.py"), "serve", recording, str(domains),
             "--web.listen-address", "127.0.0.1:%d" % self.port, "--libvirt.min-interval", "0",
             "--log.level", "warn", *extra], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.url = "http://127.0.0.1:%d/metrics" % self.port
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen("http://127.0.0.1:%d/-/healthy" % self.port, timeout=2).read()
                return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("replayed exporter did not start")

    def scrape(self, gzip: bool = False) -> Tuple[float, int]:
        request = urllib.request.Request(self.url, headers={"Accept-Encoding": "gzip"} if gzip else {})
        t0 = time.perf_counter()
        with urllib.request.urlopen(request, timeout=120) as r:
            body = r.read()
        return time.perf_counter() - t0, len(body)

    def cpu_per_scrape_s(self, scrapes: int, gzip: bool) -> Tuple[float, int]:
        """The exporter's own CPU per scrape (utime + stime of its process), and the body's size."""
        cpu0 = self.cpu_s()
        size = 0
        for _ in range(scrapes):
            _t, size = self.scrape(gzip)
        return (self.cpu_s() - cpu0) / scrapes, size

    def peak_rss_mib(self) -> float:
        for line in Path("/proc/%d/status" % self.proc.pid).read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def cpu_s(self) -> float:
        fields = Path("/proc/%d/stat" % self.proc.pid).read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=20)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--domains", default="100,500,1000,2000")
    ap.add_argument("--scrapes", type=int, default=15)
    ap.add_argument("--idle-seconds", type=float, default=60.0)
    ap.add_argument("--recording", default="", help="use this recording instead of making one")
    ap.add_argument("--gzip-domains", type=int, default=1000,
                    help="domains at which to compare the CPU of plain and gzip-compressed scrapes (0: skip)")
    args = ap.parse_args()
    recording = args.recording
    if not recording:
        recording = os.path.join(tempfile.mkdtemp(prefix="virt-exporter-bench-"), "recording.json")
        record_from_testbed(recording)
    print("host: %d CPUs, load %s" % (os.cpu_count() or 0, " ".join("%.2f" % x for x in os.getloadavg())))
    print("\n%8s %14s %14s %12s %12s" % ("domains", "median ms", "ms / domain", "bytes", "peak RSS MiB"))
    medians: List[Tuple[int, float]] = []
    for n in [int(x) for x in args.domains.split(",")]:
        exp = ReplayedExporter(recording, n)
        try:
            exp.scrape()  # first scrape parses every domain's XML once
            exp.scrape()
            runs = [exp.scrape() for _ in range(args.scrapes)]
            med = statistics.median(t for t, _ in runs)
            medians.append((n, med))
            print("%8d %14.1f %14.3f %12d %12.1f" % (n, med * 1000, med * 1000 / n, runs[-1][1], exp.peak_rss_mib()))
        finally:
            exp.stop()
    by_n = dict(medians)
    if 1000 in by_n and 2000 in by_n:
        print("2000-domain time / 1000-domain time: %.2f" % (by_n[2000] / by_n[1000]))

    if args.gzip_domains:
        exp = ReplayedExporter(recording, args.gzip_domains)
        try:
            exp.scrape()
            # interleaved, so both see the same load
            plain, gz = [], []
            for _ in range(max(1, args.scrapes // 3)):
                plain.append(exp.cpu_per_scrape_s(3, gzip=False))
                gz.append(exp.cpu_per_scrape_s(3, gzip=True))
            p_cpu, g_cpu = statistics.median(c for c, _ in plain), statistics.median(c for c, _ in gz)
            print("\ngzip at %d domains: exporter CPU per scrape %.0f ms plain, %.0f ms gzip (+%.0f ms); "
                  "body %d -> %d bytes" % (args.gzip_domains, p_cpu * 1000, g_cpu * 1000, (g_cpu - p_cpu) * 1000,
                                           plain[-1][1], gz[-1][1]))
        finally:
            exp.stop()

    exp = ReplayedExporter(recording, 100)
    try:
        exp.scrape()
        cpu0, t0 = exp.cpu_s(), time.monotonic()
        while time.monotonic() - t0 < args.idle_seconds:
            exp.scrape()
            time.sleep(max(0.0, 15.0 - (time.monotonic() - t0) % 15.0))
        cpu1, t1 = exp.cpu_s(), time.monotonic()
        print("\nidle, 100 domains scraped every 15 s for %.0f s: %.2f %% of one core"
              % (t1 - t0, 100 * (cpu1 - cpu0) / (t1 - t0)))
    finally:
        exp.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
