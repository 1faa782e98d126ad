"""server.py: gzip when the scrape asks for it (as Prometheus does), byte-for-byte the same body."""

from __future__ import annotations

import contextlib
import gzip
import threading
import urllib.request
from typing import Any, Iterator, List, Optional

import pytest
from prometheus_client.core import GaugeMetricFamily

from exporterproc import free_port
from virt_exporter.server import ExporterHTTPServer, accepts_gzip, gzip_chunks


@pytest.mark.parametrize("header,expected", [
    ("gzip", True),
    ("gzip, deflate, br", True),
    ("deflate, GZIP;q=0.5", True),
    ("*", True),
    ("gzip;q=0", False),
    ("gzip;q=0.0, identity", False),
    ("identity", False),
    ("deflate, br", False),
    ("", False),
    (None, False),
    ("gzip;q=bogus", False),
])
def test_accepts_gzip(header: Optional[str], expected: bool) -> None:
    assert accepts_gzip(header) is expected


def test_gzip_chunks_is_one_stream_of_the_whole_body() -> None:
    chunks = [b"a" * 1000, b"", b"b\n" * 5000, b"c"]
    assert gzip.decompress(b"".join(gzip_chunks(chunks))) == b"".join(chunks)
    assert gzip.decompress(b"".join(gzip_chunks([]))) == b""


class FixedScrape:
    def prefetch(self) -> None:
        pass

    def collect(self) -> List[Any]:
        # a few hundred KiB, more than one write batch
        g = GaugeMetricFamily("libvirt_domain_memory_current_bytes", "memory", labels=["domain"])
        for i in range(20000):
            g.add_metric(["vm-%05d" % i], i * 1024.0)
        return [g]


class FixedExporter:
    def scrape(self, timeout_s: Optional[float] = None) -> FixedScrape:
        return FixedScrape()


@contextlib.contextmanager
def serving() -> Iterator[str]:
    server = ExporterHTTPServer("127.0.0.1:%d" % free_port(), FixedExporter())  # type: ignore[arg-type]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield "http://127.0.0.1:%d/metrics" % server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def get(url: str, **headers: str):
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=30) as r:
        return r.headers, r.read()


def test_metrics_are_gzipped_only_when_asked_and_decompress_to_the_same_body() -> None:
    with serving() as url:
        plain_headers, plain = get(url)
        gz_headers, gz = get(url, **{"Accept-Encoding": "gzip"})
        refused_headers, refused = get(url, **{"Accept-Encoding": "gzip;q=0"})
    assert plain_headers.get("Content-Encoding") is None
    assert refused_headers.get("Content-Encoding") is None and refused == plain
    assert gz_headers["Content-Encoding"] == "gzip"
    assert int(gz_headers["Content-Length"]) == len(gz) < len(plain) / 5
    assert gzip.decompress(gz) == plain
    assert plain_headers["Vary"] == gz_headers["Vary"] == "Accept-Encoding"
