"""What the per-sample listings cost: autostart/persistent (two filtered domain list calls) and the
storage pools (one list call, one info call per pool), against the bulk stats call of the same host.

    .venv/bin/python bench/bench_listings.py [--pools 0,5,20] [--rounds 50]

Defines that many directory pools (vet-<pid>-pool-N, removed at the end, also on failure) and times,
interleaved, on a read-only connection: the domain flags listing, the storage pool listing, and one
getAllDomainStats call with the default collectors' groups over whatever domains the host has.
Prints median / p95 in ms. Absolute figures swing with the machine's load: compare within one run.
Not a test.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List

import libvirt

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

import testbed as tb  # noqa: E402
from virt_exporter.sample import DOMAIN_FLAGS, STORAGE_POOLS  # noqa: E402
from virt_exporter.source import bulk  # noqa: E402
from virt_exporter.source.listings import ListingReader  # noqa: E402

GROUPS = ["state", "cpu-total", "balloon", "vcpu", "interface", "block"]


def timed(fn: Callable[[], object], rounds: int) -> List[float]:
    out = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1000)
    return out


def main(argv: List[str]) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pools", default="0,5,20")
    ap.add_argument("--rounds", type=int, default=50)
    args = ap.parse_args(argv)
    conn = libvirt.openReadOnly(tb.URI)
    bed = tb.Testbed()
    made = []
    try:
        print("domains on the host: %d" % len(conn.listAllDomains(0)))
        print("%6s %22s %22s %22s" % ("pools", "domain flags ms", "storage pools ms", "bulk stats ms"))
        for count in [int(c) for c in args.pools.split(",")]:
            while len(made) < count:
                made.append(tb.make_storage_pool(bed, "dir"))
            flags, pools = ListingReader([DOMAIN_FLAGS]), ListingReader([STORAGE_POOLS])
            runs: Dict[str, List[float]] = {"flags": [], "pools": [], "bulk": []}
            for _ in range(args.rounds):
                runs["flags"] += timed(lambda r=flags: r.domain_flags(conn), 1)
                runs["pools"] += timed(lambda r=pools: r.storage_pools(conn), 1)
                runs["bulk"] += timed(lambda: bulk.get_all_domain_stats(conn, GROUPS, True), 1)

            def fmt(xs: List[float]) -> str:
                return "%8.2f / p95 %7.2f" % (statistics.median(xs), sorted(xs)[int(len(xs) * 0.95) - 1])

            print("%6d %22s %22s %22s" % (count, fmt(runs["flags"]), fmt(runs["pools"]), fmt(runs["bulk"])))
    finally:
        for name, directory in made:
            tb.remove_storage_pool(name, directory)
        bed.cleanup()
        conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
