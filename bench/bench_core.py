"""The bare bulk stats call beside the exporter's scrape, on the demo test bed (a script, not a test).

    bash scripts/testbed.sh up                   # demo-busy, demo-idle, demo-blank
    .venv/bin/python bench/bench_core.py [--runs 25] [--warmup 3] [--uri qemu:///system]

Interleaved rounds (the order rotates each round so neither side always runs on a warmer libvirtd) of:
  bare        one virConnectGetAllDomainStats call with the exporter's groups and flags (from
              virt_exporter.source.bulk: NOWAIT, backing chain), on a read-only connection
  bare-split  what the exporter does with its default concurrency K: K concurrent calls, each on its
              own connection, listing the domains there (listAllDomains) and taking the stats of its
              share of them (domainListGetStats)
  scrape      GET /metrics on the exporter (started here, --libvirt.min-interval 0 so every scrape
              takes a fresh sample), client side, the whole HTTP exchange
and prints median and p95 of each, plus the libvirt time the exporter reports for its own sample
(libvirt_exporter_bulk_stats_duration_seconds) and scrape minus that (the exporter's own cost).
Other domains on the host (other people's tests) are in every call too: compare within one run only.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Dict, List, Sequence

import libvirt

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from exporterproc import ExporterProcess  # noqa: E402
from scrape import Samples  # noqa: E402
from testbed import DEMO_GUESTS, domain_active  # noqa: E402
from virt_exporter import cli, options  # noqa: E402
from virt_exporter.app import default_concurrency  # noqa: E402
from virt_exporter.collectors import load_all  # noqa: E402
from virt_exporter.source import bulk  # noqa: E402


def exporter_groups() -> List[str]:
    """The stats groups the exporter asks for with its default flags (as App computes them)."""
    load_all()
    return options.stats_groups(options.enabled_collectors(cli.build_parser().parse_args([])))


def pct(values: Sequence[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


class Bare:
    """The libvirt calls alone, timed around the call itself."""

    def __init__(self, uri: str, groups: Sequence[str], concurrency: int) -> None:
        self.mask = bulk.stats_mask(groups)
        self.flags = bulk.call_flags(backing=True)
        self.conn = libvirt.openReadOnly(uri)
        self.lanes = [libvirt.openReadOnly(uri) for _ in range(concurrency)]
        self.domains = 0

    def one_call(self) -> float:
        t0 = time.perf_counter()
        result = self.conn.getAllDomainStats(self.mask, self.flags)
        took = time.perf_counter() - t0
        self.domains = len(result)
        return took

    def split(self) -> float:
        t0 = time.perf_counter()
        errors: List[BaseException] = []
        parts = len(self.lanes)

        def run(i: int, conn: libvirt.virConnect) -> None:
            # Listed on the call's own connection: libvirt routes domainListGetStats over the
            # connection the virDomain objects belong to, whatever connection it is called on.
            try:
                domains = sorted(conn.listAllDomains(0), key=lambda d: d.UUIDString())[i::parts]
                if domains:
                    conn.domainListGetStats(domains, self.mask, self.flags)
            except libvirt.libvirtError as e:  # a domain that vanished meanwhile (other tests)
                errors.append(e)

        threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(self.lanes)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        took = time.perf_counter() - t0
        if errors:
            print("  (split round: %s)" % errors[0], file=sys.stderr)
        return took

    def close(self) -> None:
        for c in [self.conn] + self.lanes:
            c.close()


def main(argv: Sequence[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=25, help="measured rounds (default 25, at least 20)")
    ap.add_argument("--warmup", type=int, default=3, help="rounds run first and not counted (default 3)")
    ap.add_argument("--uri", default="qemu:///system")
    opts = ap.parse_args(argv)
    if opts.runs < 20:
        ap.error("--runs must be at least 20")

    down = [name for name in DEMO_GUESTS if not domain_active(name)]
    if down:
        print("demo guests not running: %s (bash scripts/testbed.sh up)" % ", ".join(down), file=sys.stderr)
        return 1

    groups = exporter_groups()
    concurrency = default_concurrency()
    bare = Bare(opts.uri, groups, concurrency)
    results: Dict[str, List[float]] = {"bare": [], "bare-split": [], "scrape": [], "reported": []}
    series = 0
    with ExporterProcess(["--libvirt.uri", opts.uri, "--libvirt.min-interval", "0", "--log.level", "warn"]) as exp:
        url = exp.url + "/metrics"

        def scrape() -> float:
            nonlocal series
            t0 = time.perf_counter()
            with urllib.request.urlopen(url, timeout=60) as r:
                body = r.read()
            took = time.perf_counter() - t0
            samples = Samples.parse(body.decode())
            if samples.get("libvirt_up") != 1:
                raise SystemExit("the exporter says libvirt_up %s:\n%s" % (
                    samples.get("libvirt_up"), exp.log()[-2000:]))
            results["reported"].append(samples.get("libvirt_exporter_bulk_stats_duration_seconds") or 0.0)
            series = len(samples.values)
            return took

        steps: List[tuple] = [("bare", bare.one_call), ("bare-split", bare.split), ("scrape", scrape)]
        for i in range(opts.warmup + opts.runs):
            order = steps[i % 3:] + steps[:i % 3]
            for name, fn in order:
                took = fn()
                if i >= opts.warmup:
                    results[name].append(took)
            if i < opts.warmup:
                results["reported"].clear()
    bare.close()

    overhead = [s - r for s, r in zip(results["scrape"], results["reported"])]
    rows = [
        ("bare getAllDomainStats, 1 call", results["bare"]),
        ("bare split: %d x (listAllDomains + domainListGetStats)" % concurrency, results["bare-split"]),
        ("exporter scrape over HTTP (GET /metrics)", results["scrape"]),
        ("  its libvirt stats time, self-reported", results["reported"]),
        ("  scrape minus that (exporter's own cost)", overhead),
    ]
    print("groups %s, flags 0x%x (NOWAIT|BACKING), %d domains on the host (%s among them), %d series/scrape"
          % (",".join(groups), bulk.call_flags(True), bare.domains, ", ".join(DEMO_GUESTS), series))
    print("%d interleaved rounds after %d warm-up rounds\n" % (opts.runs, opts.warmup))
    width = max(len(r[0]) for r in rows)
    print("%-*s  %6s  %10s  %10s" % (width, "what", "n", "median ms", "p95 ms"))
    for label, values in rows:
        print("%-*s  %6d  %10.1f  %10.1f" % (width, label, len(values), statistics.median(values) * 1e3,
                                            pct(values, 0.95) * 1e3))
    ratio = statistics.median(results["scrape"]) / statistics.median(results["bare"])
    print("\nscrape / bare call (medians): %.2fx" % ratio)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
