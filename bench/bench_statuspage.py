"""Server time of the status page at N replayed domains: building the view from the held sample and
rendering it (HTML and JSON), in the exporter's own process, through its own path (bench/replay.py
replaces only the libvirt connection). Prints medians; not a test.

    .venv/bin/python bench/bench_statuspage.py [--domains 500] [--rounds 30] [--recording FILE]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO))

import replay  # noqa: E402
from bench_scale import record_from_testbed  # noqa: E402

from exporterproc import free_port  # noqa: E402
from virt_exporter import cli, statuspage  # noqa: E402
from virt_exporter.app import App  # noqa: E402
from virt_exporter.collectors import load_all  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--domains", type=int, default=500)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--recording", default="", help="use this recording instead of making one")
    args = ap.parse_args()
    recording = args.recording
    if not recording:
        recording = os.path.join(tempfile.mkdtemp(prefix="virt-exporter-bench-"), "recording.json")
        record_from_testbed(recording)
    replay.install(recording, args.domains)
    load_all()
    app = App(cli.build_parser().parse_args(["--libvirt.uri", "replay:///bench", "--web.listen-address",
                                             "127.0.0.1:%d" % free_port(), "--libvirt.min-interval", "3600"]))
    app.start()
    try:
        exporter = app.exporter
        view = exporter.status()  # the sample the page renders, taken once; then only the page's own work
        view = exporter.status()
        build, html_s, json_s = [], [], []
        for _ in range(args.rounds):
            t0 = time.perf_counter()
            view = exporter.status()
            t1 = time.perf_counter()
            page = statuspage.render_html(view)
            t2 = time.perf_counter()
            statuspage.render_json(view)
            t3 = time.perf_counter()
            build.append(t1 - t0)
            html_s.append(t2 - t1)
            json_s.append(t3 - t2)
        print("host: %d CPUs, load %s" % (os.cpu_count() or 0, " ".join("%.2f" % x for x in os.getloadavg())))
        print("status page at %d domains, medians of %d rounds (sample held, as a page load within the "
              "min-interval of the last scrape):" % (len(view.domains), args.rounds))
        print("  build the view  %6.1f ms" % (1000 * statistics.median(build)))
        print("  render HTML     %6.1f ms  (%d bytes)" % (1000 * statistics.median(html_s), len(page)))
        print("  render JSON     %6.1f ms" % (1000 * statistics.median(json_s)))
        print("  view + HTML     %6.1f ms" % (1000 * statistics.median(b + h for b, h in zip(build, html_s))))
    finally:
        app.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
