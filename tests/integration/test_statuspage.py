"""The status page at / in a real browser (Debian's headless Chromium) against the real test bed:
every running guest's row shows the MHz, vCPUs, memory, NUMA cells and state /metrics gives for the
same sample (and the memory virsh gives), the console stays silent, a domain named with markup shows
as text and runs nothing, and with basic auth on the page answers 401 without credentials.

The page's numbers are read back as numbers by the test's own parsing (units written out here), never
formatted with the product's formatters. Chromium reaches the exporter through a forwarding proxy
that scrapes /metrics the moment the page's answer came back, so the two share a sample however long
Chromium takes to start.
"""

from __future__ import annotations

import contextlib
import html
import http.server
import os
import re
import shutil
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator, List, Optional

import bcrypt
import lxml.html
import pytest

import testbed as tb
from browser import dump_dom, find_rows, screenshot, text_of
from exporterproc import ExporterProcess, free_port
from scrape import Samples

REPO = Path(__file__).resolve().parents[2]
# The README's screenshot is made by this test when asked: VIRT_EXPORTER_DOCS_SCREENSHOT=1
DOCS_SCREENSHOT = REPO / "docs" / "status-page.png"

pytestmark = [pytest.mark.libvirt, pytest.mark.timeout(300, func_only=True)]


# A request within this long of the last sample reuses it: the page and the proxy's scrape right after it.
MIN_INTERVAL_S = 10
# The page's byte units (binary), as a reader of the page takes them.
UNITS = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40}


@pytest.fixture
def exporter():
    with ExporterProcess(["--libvirt.min-interval", str(MIN_INTERVAL_S)]) as exp:
        exp.scrape()  # a first sample, so the next one has rates
        yield exp


class ScrapingProxy(http.server.ThreadingHTTPServer):
    """Forwards GET to the exporter; right after the exporter answered the page (``/``), and before
    the browser gets it, scrapes /metrics: the scrape then falls within the min-interval of the
    page's sample by milliseconds, not by however long the browser took."""

    def __init__(self, exporter: ExporterProcess) -> None:
        self.exporter = exporter
        self.scrapes: List[Samples] = []
        super().__init__(("127.0.0.1", free_port()), _ProxyHandler)

    @property
    def url(self) -> str:
        return "http://127.0.0.1:%d" % self.server_address[1]


class _ProxyHandler(http.server.BaseHTTPRequestHandler):
    server: ScrapingProxy

    def do_GET(self) -> None:  # noqa: N802 - the standard library's name
        headers = {k: v for k, v in self.headers.items() if k.lower() in ("accept", "authorization")}
        status, got, body = self.server.exporter.get(self.path, headers=headers)
        if self.path == "/" and status == 200:
            self.server.scrapes.append(self.server.exporter.scrape())
        self.send_response(status)
        for name in ("Content-Type", "Content-Security-Policy"):
            if got.get(name):
                self.send_header(name, got[name])
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@contextlib.contextmanager
def scraping_proxy(exporter: ExporterProcess) -> Iterator[ScrapingProxy]:
    proxy = ScrapingProxy(exporter)
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    try:
        yield proxy
    finally:
        proxy.shutdown()
        proxy.server_close()
        thread.join(10)


def number(cell: str) -> Optional[float]:
    """A MHz cell ("1523") as a number; None for the page's "no value" dash."""
    return None if cell in ("–", "-", "") else float(cell)


def size_bytes(cell: str) -> Optional[float]:
    """A size cell ("64.0 MiB") in bytes, and how far its one decimal may be from the true value."""
    if cell in ("–", "-", ""):
        return None
    m = re.fullmatch(r"([0-9.]+) (B|KiB|MiB|GiB|TiB)", cell)
    assert m, "not a size: %r" % cell
    return float(m.group(1)) * UNITS[m.group(2)]


def size_close(cell: str, value: Optional[float]) -> bool:
    got = size_bytes(cell)
    if got is None or value is None:
        return got is value
    unit = UNITS[cell.split()[1]]
    return abs(got - value) <= 0.05 * unit + 0.5


def cells_with(samples: Samples, name: str, domain: str) -> str:
    """The host cells where a per-cell series of the domain is above 0, as the page lists them."""
    cells = sorted(int(labels["cell"]) for labels, value in samples.series(name, domain=domain) if value > 0)
    return ", ".join(map(str, cells)) or "–"


def _rows_by_name(dom: str):
    rows = find_rows(dom, "domains")
    assert rows is not None, "no VM table on the page"
    return {text_of(row.xpath("./td")[0]): row for row in rows}


@pytest.fixture
def partly_online(libvirtd):
    """A guest with one of its two vCPUs online: the page's vCPUs (online) differ from the maximum."""
    bed = tb.Testbed()
    try:
        guest = bed.make_guest("blank", vcpus=2, vcpus_current=1)
        guest.wait_booted()
        yield guest
    finally:
        bed.cleanup()


def test_page_shows_what_metrics_shows_for_every_running_guest(standard_guests, partly_online, exporter, tmp_path):
    time.sleep(MIN_INTERVAL_S + 0.5)  # past the min-interval: the page's request takes a fresh sample
    with scraping_proxy(exporter) as proxy:
        dom, console = dump_dom(proxy.url + "/")
    assert console == [], console
    assert len(proxy.scrapes) == 1, "the browser asked for the page %d times" % len(proxy.scrapes)
    samples = proxy.scrapes[0]
    rows = _rows_by_name(dom)
    for guest in list(standard_guests) + [partly_online]:
        cells = [text_of(td) for td in rows[guest.name].xpath("./td")]
        assert cells[1].startswith("running") and samples.get("libvirt_domain_state", domain=guest.name) == 1
        mhz = samples.get("libvirt_domain_cpu_usage_mhz", domain=guest.name)
        assert mhz is not None and abs(number(cells[2]) - mhz) <= 0.5, (guest.name, cells[2], mhz)
        current = samples.get("libvirt_domain_memory_current_bytes", domain=guest.name)
        assert size_close(cells[5], current), (guest.name, cells[5], current)
        # the balloon does not move on its own: virsh's figure (KiB) is the page's too
        assert size_close(cells[5], 1024 * tb.virsh_domstats(guest.name, "balloon")["balloon.current"]), cells[5]
        rss = samples.get("libvirt_domain_memory_rss_bytes", domain=guest.name)
        assert size_close(cells[6], rss), (guest.name, cells[6], rss)
        assert number(cells[3]) == samples.get("libvirt_domain_vcpus", domain=guest.name), cells[3]
        assert number(cells[3]) == tb.virsh_domstats(guest.name, "vcpu")["vcpu.current"], cells[3]
        # NUMA: the cells /metrics gives memory / a vCPU on ("–" while the reader has not read the guest)
        assert cells[7] == cells_with(samples, "libvirt_domain_numa_memory_bytes", guest.name), cells[7]
        assert cells[8] == cells_with(samples, "libvirt_domain_numa_vcpus", guest.name), cells[8]
        assert tb.domain_active(guest.name)
    shot = tmp_path / "status-page.png"
    assert screenshot(exporter.url + "/", shot) == []
    if os.environ.get("VIRT_EXPORTER_DOCS_SCREENSHOT") == "1":
        shutil.copy(shot, DOCS_SCREENSHOT)


def test_a_domain_named_with_markup_shows_as_text_and_runs_nothing(libvirtd, tmp_path):
    # libvirt refuses only '/' in a name
    name = "vet-%d-xss\"><img src=x onerror=\"document.title='pwned'\"><script>document.title='pwned'" % os.getpid()
    xml = ("<domain type='kvm'><name>%s</name><memory>65536</memory><vcpu>1</vcpu>"
           "<os><type arch='x86_64' machine='pc'>hvm</type></os><devices/></domain>") % html.escape(name)
    path = tmp_path / "xss.xml"
    path.write_text(xml)
    tb.virsh("define", str(path))
    try:
        with ExporterProcess(["--libvirt.min-interval", "0"]) as exp:
            dom, console = dump_dom(exp.url + "/")
        root = lxml.html.fromstring(dom)
        assert root.findtext(".//title") != "pwned" and "pwned" not in (root.findtext(".//title") or "")
        assert not root.xpath('//table[@id="domains"]//img') and not root.xpath('//table[@id="domains"]//script')
        rows = _rows_by_name(dom)
        assert name in rows, sorted(rows)  # the name, as text, in its own cell
        assert text_of(rows[name].xpath("./td")[1]).startswith("shut off")
        assert console == [], console  # nothing ran, and nothing was even refused
    finally:
        tb.virsh("undefine", name, check=False)


class AuthExporterProcess(ExporterProcess):
    def ready(self) -> bool:
        """/-/healthy needs the credentials too: a 401 means it serves."""
        return self.get("/-/healthy", timeout_s=2)[0] == 401


def test_page_needs_the_credentials_metrics_needs(libvirtd, tmp_path):
    password = "s3cret"
    config = tmp_path / "web.yml"
    config.write_text("basic_auth_users:\n  prometheus: %s\n"
                      % bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode())
    with AuthExporterProcess(["--web.config.file", str(config)]) as exp:
        for path in ("/", "/metrics"):
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(exp.url + path, timeout=10)
            assert refused.value.code == 401
        status, headers, body = exp.get("/", headers={"Authorization": "Basic cHJvbWV0aGV1czpzM2NyZXQ="})
        assert status == 200 and body.startswith(b"<!DOCTYPE html>")
