"""Limits against abuse of the HTTP server (issue 8): request size, a cap on concurrent scrapes with a
clear 503 that scrapes waiting on a shared in-flight sample do not count against, and 20 concurrent
scrapers for 30 s against the real exporter at the default cap — all answered completely, sharing
samples, and every response of one sample identical in its series set.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, FrozenSet, Iterator, List, Optional, Tuple

import pytest
from prometheus_client.core import GaugeMetricFamily

from bounds import wait_for
from exporterproc import ExporterProcess, free_port
from scrape import Samples, printed_series
from virt_exporter.server import MAX_HEADERS, MAX_REQUEST_LINE_BYTES, ExporterHTTPServer

TEST_BOUND_S = 150
pytestmark = pytest.mark.timeout(TEST_BOUND_S, func_only=True)


# --- the HTTP server in-process, with an exporter whose sample and rendering the test holds --------


class HeldScrape:
    def __init__(self, exporter: "HeldExporter", waits_for_sample: bool) -> None:
        self.exporter, self.waits_for_sample = exporter, waits_for_sample

    def prefetch(self) -> None:
        if self.waits_for_sample:
            with self.exporter.lock:
                self.exporter.waiting += 1
            self.exporter.sample_ready.wait(10)

    def collect(self) -> List[Any]:
        with self.exporter.lock:
            self.exporter.rendering += 1
        self.exporter.render_ok.wait(10)
        g = GaugeMetricFamily("libvirt_up", "up")
        g.add_metric([], 1)
        return [g]


class HeldExporter:
    """scrape(timeout): a scrape carrying Prometheus's timeout header renders at once; one without it
    waits for a shared sample first (as scrapes do while another one's sample is in flight)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.sample_ready = threading.Event()
        self.render_ok = threading.Event()
        self.waiting = 0
        self.rendering = 0

    def scrape(self, timeout_s: Optional[float] = None) -> HeldScrape:
        return HeldScrape(self, waits_for_sample=timeout_s is None)


@contextlib.contextmanager
def serving(exporter: HeldExporter, max_requests: int) -> Iterator[int]:
    server = ExporterHTTPServer("127.0.0.1:%d" % free_port(), exporter,  # type: ignore[arg-type]
                                max_requests=max_requests)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1]
    finally:
        exporter.sample_ready.set()
        exporter.render_ok.set()
        server.shutdown()
        server.server_close()


def raw_request(port: int, data: bytes, timeout_s: float = 10.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as s:
        s.sendall(data)
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            if not chunk:
                break
            out += chunk
            if b"\r\n\r\n" in out:
                head, _, body = out.partition(b"\r\n\r\n")
                length = [int(line.split(b":")[1]) for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length:")]
                if length and len(body) >= length[0]:
                    break
        return out


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def get(port: int, timeout_header: bool) -> bytes:
    extra = b"X-Prometheus-Scrape-Timeout-Seconds: 10\r\n" if timeout_header else b""
    return raw_request(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + extra + b"\r\n")


def test_request_size_limits() -> None:
    exporter = HeldExporter()
    exporter.sample_ready.set()
    exporter.render_ok.set()
    with serving(exporter, max_requests=40) as port:
        long_line = b"GET /" + b"a" * (MAX_REQUEST_LINE_BYTES + 10) + b" HTTP/1.1\r\n\r\n"
        assert status_of(raw_request(port, long_line)) == 414
        headers = b"".join(b"X-H%d: v\r\n" % i for i in range(MAX_HEADERS + 5))
        assert status_of(raw_request(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")) == 431
        body = b"GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
        assert status_of(raw_request(port, body)) == 413
        # and a normal scrape still works
        assert status_of(get(port, timeout_header=True)) == 200


def test_concurrent_scrape_cap_is_a_clear_503() -> None:
    exporter = HeldExporter()
    exporter.sample_ready.set()
    with serving(exporter, max_requests=1) as port, ThreadPoolExecutor(2) as pool:
        first = pool.submit(get, port, True)      # renders, holds the one slot
        wait_for(lambda: exporter.rendering >= 1, 5, "the first scrape rendering", 0.01)
        second = get(port, True)
        assert status_of(second) == 503
        assert b"too many concurrent scrapes" in second and b"--web.max-requests" in second
        exporter.render_ok.set()
        assert status_of(first.result(10)) == 200
        assert status_of(get(port, True)) == 200  # the slot is free again


def test_scrapes_waiting_for_a_shared_sample_do_not_count() -> None:
    exporter = HeldExporter()
    exporter.render_ok.set()
    with serving(exporter, max_requests=2) as port, ThreadPoolExecutor(12) as pool:
        waiting = [pool.submit(get, port, False) for _ in range(10)]   # all wait for the sample
        wait_for(lambda: exporter.waiting >= 10, 5, "ten scrapes waiting for the sample", 0.01)
        # ten scrapes wait, the cap is two: one that renders still gets through
        assert status_of(get(port, True)) == 200
        assert not any(f.done() for f in waiting)
        exporter.sample_ready.set()
        codes = [status_of(f.result(10)) for f in waiting]
        assert set(codes) <= {200, 503}


# --- 20 concurrent scrapers against the real exporter ---------------------------------------------

SCRAPERS = 20
WINDOW_S = 30.0
ROUND_S = 0.5              # all 20 arrive together, twice a second
SAMPLE_ID = "libvirt_exporter_bulk_stats_duration_seconds "


def series_keys(text: str, mine: List[str]) -> FrozenSet[str]:
    """The series of an exposition (the text before each value), except those about other tests'
    guests (they come and go on this host)."""
    return frozenset(key for key in printed_series(text)
                     if 'domain="' not in key or any('domain="%s"' % g in key for g in mine))


def test_twenty_concurrent_scrapers(testbed) -> None:
    guests = [testbed.make_guest("idle"), testbed.make_guest("blank")]
    mine = [g.name for g in guests]
    with ExporterProcess([]) as exp:  # defaults: --web.max-requests 40, --libvirt.min-interval 1
        wait_for(lambda: all(exp.scrape().names_for_domain(g) for g in mine), 30, "both guests in a scrape", 0.3)
        results: List[Tuple[int, bytes]] = []
        errors: List[str] = []
        lock = threading.Lock()
        rounds = int(WINDOW_S / ROUND_S)
        barrier = threading.Barrier(SCRAPERS)

        def scraper() -> None:
            t_next = time.monotonic()
            for _ in range(rounds):
                try:
                    barrier.wait(30)
                    status, _h, body = exp.get(timeout_s=20.0)
                except Exception as e:  # counted, not raised
                    with lock:
                        errors.append(str(e))
                    continue
                with lock:
                    results.append((status, body))
                t_next += ROUND_S
                time.sleep(max(0.0, t_next - time.monotonic()))

        threads = [threading.Thread(target=scraper, daemon=True) for _ in range(SCRAPERS)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join(WINDOW_S + 60)
        elapsed_s = time.monotonic() - t0
        log = exp.log()
    assert not errors, errors[:5]
    codes = defaultdict(int)
    for status, _b in results:
        codes[status] += 1
    assert set(codes) == {200}, dict(codes)
    assert len(results) == SCRAPERS * rounds
    by_sample: Dict[str, List[FrozenSet[str]]] = defaultdict(list)
    parsed = set()
    for _s, body in results:
        text = body.decode()
        assert text.endswith("\n") and "# EOF" not in text
        assert "\nlibvirt_up 1.0\n" in text
        sample_id = text[text.index("\n" + SAMPLE_ID):].split("\n", 2)[1]
        if sample_id not in parsed:  # one full parse per sample: a truncated body would not parse
            parsed.add(sample_id)
            samples = Samples.parse(text)
            for g in mine:
                assert samples.series("libvirt_domain_info", domain=g), "%s missing" % g
        by_sample[sample_id].append(series_keys(text, mine))
    # Concurrent scrapers share samples: at most one per --libvirt.min-interval (1 s).
    assert len(by_sample) <= elapsed_s / 1.0 + 1, "%d samples for %d scrapes in %.1f s" % (
        len(by_sample), len(results), elapsed_s)
    for sets in by_sample.values():
        assert len(set(sets)) == 1, "responses from one sample differ in their series"
    assert "Traceback" not in log
    print("%d scrapes by %d scrapers in %d rounds (%.1f s), %d samples" % (len(results), SCRAPERS, rounds,
                                                                          elapsed_s, len(by_sample)))


class BigScrape:
    """A scrape whose body spans several of the server's write batches."""

    def __init__(self, families: List[Any]) -> None:
        self.families = families

    def prefetch(self) -> None:
        pass

    def collect(self) -> List[Any]:
        return self.families


class BigExporter:
    def __init__(self, families: List[Any]) -> None:
        self.families = families

    def scrape(self, timeout_s: Optional[float] = None) -> BigScrape:
        return BigScrape(self.families)


@pytest.mark.parametrize("accept,openmetrics", [("", False), ("application/openmetrics-text; version=1.0.0", True)])
def test_a_body_of_many_write_batches_arrives_whole(accept: str, openmetrics: bool) -> None:
    from virt_exporter.exposition import FastFamily, render
    from virt_exporter.server import WRITE_BATCH_BYTES

    families = []
    for f in range(60):
        fam = FastFamily("libvirt_test_%d" % f, "family %d" % f, "gauge", ["domain", "device"])
        for d in range(400):
            fam.add_metric(["guest-%04d" % d, "vd%d" % f], d * 1.5 + f)
        families.append(fam)
    want = render(families, openmetrics)
    assert len(want) > 3 * WRITE_BATCH_BYTES
    server = ExporterHTTPServer("127.0.0.1:%d" % free_port(), BigExporter(families))  # type: ignore[arg-type]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        extra = ("Accept: %s\r\n" % accept).encode() if accept else b""
        got = raw_request(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n" + extra + b"Connection: close\r\n\r\n")
        head, _, body = got.partition(b"\r\n\r\n")
        assert status_of(got) == 200
        assert body == want
        head_only = raw_request(port, b"HEAD /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 5.0)
        assert head_only.endswith(b"\r\n\r\n") and b"Content-Length: %d" % len(render(families, False)) in head_only
    finally:
        server.shutdown()
        server.server_close()
