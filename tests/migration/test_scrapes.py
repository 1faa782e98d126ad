"""Scrapes through live migrations, both ways: the host's exporter and the second hypervisor's are
each scraped every 0.5 s while a guest that filled 16 MiB of memory moves out (bandwidth-capped, so
the move lasts seconds) and back, twice. No scrape fails, none takes longer than that host's normal
scrape (the median before the first migration) plus 1 s, no scrape repeats a series, and the guest's
series leave the source and appear on the destination under the same uuid; the source shows the
outgoing migration as a job while it runs, and counts it when it completes."""

from __future__ import annotations

import statistics
import threading
import time
from collections import Counter
from typing import Dict, List, Tuple

import pytest

from exporterproc import ExporterProcess
from scrape import Samples, printed_series

from .conftest import HOST_URI, Churn, exporter_at, migrate

pytestmark = [pytest.mark.timeout(240, func_only=True)]

SCRAPE_EVERY_S = 0.5
SLACK_S = 1.0
ROUND_TRIPS = 2
BANDWIDTH_MIB_S = 4


class Scraper:
    """Scrapes one exporter every SCRAPE_EVERY_S on its own thread; keeps (start, duration, text or error)."""

    def __init__(self, exporter: ExporterProcess) -> None:
        self.exporter = exporter
        self.records: List[Tuple[float, float, str, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                text, error = self.exporter.scrape_text(timeout_s=15), ""
            except Exception as e:  # recorded and asserted on, never lost
                text, error = "", repr(e)
            self.records.append((started, time.monotonic() - started, text, error))
            self._stop.wait(max(0.0, SCRAPE_EVERY_S - (time.monotonic() - started)))

    def start(self) -> "Scraper":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)


def domain_uuids(text: str, name: str) -> List[str]:
    samples = Samples.parse(text)
    return [labels["uuid"] for labels, _v in samples.series("libvirt_domain_info", domain=name)]


def check_scrapes(where: str, scraper: Scraper, baseline_until: float, churn: Churn) -> Dict[str, float]:
    records = scraper.records
    failed = [(round(s, 2), e) for s, _d, _t, e in records if e]
    assert not failed, "%s: scrapes failed: %s" % (where, failed[:5])
    down = [round(s, 2) for s, _d, t, _e in records if "\nlibvirt_up 1.0" not in t and "\nlibvirt_up 1\n" not in t]
    assert not down, "%s: scrapes with libvirt_up != 1 at %s" % (where, down[:5])
    normal = statistics.median([d for s, d, _t, _e in records if s < baseline_until])
    slow = [(round(s, 2), round(d, 3)) for s, d, _t, _e in records if d > normal + SLACK_S]
    excused = [x for x in slow if churn.overlaps(x[0], x[0] + x[1])]
    unexcused = [x for x in slow if x not in excused]
    assert not unexcused, "%s: scrapes over normal %.3fs + %.1fs: %s" % (where, normal, SLACK_S, unexcused)
    for start, _d, text, _e in records:
        dup = [k for k, n in Counter(printed_series(text)).items() if n > 1]
        assert not dup, "%s: scrape at %.2f repeats series %s" % (where, start, dup[:5])
    durations = [d for _s, d, _t, _e in records]
    return {"normal_s": normal, "max_s": max(durations), "scrapes": len(records), "excused": len(excused)}


def test_series_follow_the_guest_both_ways_and_no_scrape_stalls(bed, hv2):
    # transient: once it has left a host, that host knows nothing of it (a persistent guest would
    # stay defined, shut off, on the source)
    guest = bed.make_guest("filler", interface=False, iothread=False, persistent=False)
    stay = bed.make_guest("idle", interface=False, iothread=False)  # a neighbour on the host
    guest.wait_booted()
    time.sleep(6)  # the filler's pass over its 16 MiB (page faults under this host's KVM)
    churn = Churn([HOST_URI, hv2], [guest.name, stay.name])
    with exporter_at(HOST_URI) as host_exp, exporter_at(hv2) as hv2_exp:
        host, other = Scraper(host_exp).start(), Scraper(hv2_exp).start()
        try:
            time.sleep(5)
            baseline_until = time.monotonic()
            moves = []
            for _ in range(ROUND_TRIPS):
                started = time.monotonic()
                out_s = migrate(guest.name, HOST_URI, hv2, BANDWIDTH_MIB_S)
                moves.append(("out", started, time.monotonic()))
                time.sleep(2)
                started = time.monotonic()
                back_s = migrate(guest.name, hv2, HOST_URI)
                moves.append(("back", started, time.monotonic()))
                print("migration out %.1fs, back %.1fs" % (out_s, back_s))
                time.sleep(2)
        finally:
            host.stop()
            other.stop()
            churn.close()
        final_host = host_exp.scrape_text()
        final_other = hv2_exp.scrape_text()
    figures = {"host": check_scrapes("host", host, baseline_until, churn),
               "hv2": check_scrapes("hv2", other, baseline_until, churn)}
    print("scrapes: %s" % figures)

    # Where the guest is, by each exporter, after each move settled: on exactly one host, same uuid.
    uuid = guest.uuid
    for (direction, _start, end), nxt in zip(moves, [m[1] for m in moves[1:]] + [time.monotonic()]):
        src, dst = (host, other) if direction == "out" else (other, host)
        settled = [r for r in dst.records if end + 0.2 < r[0] and r[0] + r[1] < nxt]
        assert settled, "no scrape between the end of a move and the next one"
        for start, _d, text, _e in settled:
            assert domain_uuids(text, guest.name) == [uuid], (direction, start)
        for start, _d, text, _e in [r for r in src.records if end + 0.2 < r[0] and r[0] + r[1] < nxt]:
            assert domain_uuids(text, guest.name) == [], "%s: still on the source at %.2f" % (direction, start)
    assert domain_uuids(final_host, stay.name) and domain_uuids(final_host, guest.name) == [uuid]
    assert domain_uuids(final_other, guest.name) == []

    # Each source showed its outgoing migrations as a job while they ran and counted them.
    def saw_job(scraper: Scraper, since: float, until: float) -> bool:
        return any('operation="migration_out"' in t and guest.name in t for s, _d, t, _e in scraper.records
                   if since <= s <= until and "libvirt_domain_job_info" in t)

    for direction, start, end in moves:
        src = host if direction == "out" else other
        if direction == "out":  # capped: lasts seconds, several scrapes see it
            assert saw_job(src, start, end), "the source's scrapes never showed the outgoing migration"
    outs = Samples.parse(final_host).get("libvirt_domain_jobs_completed_total", operation="migration_out",
                                         outcome="completed")
    assert outs == ROUND_TRIPS, final_host[-2000:]
    backs = Samples.parse(final_other).get("libvirt_domain_jobs_completed_total", operation="migration_out",
                                           outcome="completed")
    assert backs == ROUND_TRIPS
