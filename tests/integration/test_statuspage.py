"""The status page at / in a real browser (Debian's headless Chromium) against the real test bed:
every running guest's row shows the MHz, memory and state /metrics gives for the same sample, the
console stays silent, a domain named with markup shows as text and runs nothing, and with basic
auth on the page answers 401 without credentials."""

from __future__ import annotations

import html
import os
import shutil
import urllib.error
import urllib.request
from pathlib import Path

import bcrypt
import lxml.html
import pytest

import testbed as tb
from browser import dump_dom, find_rows, screenshot, text_of
from exporter import ExporterProcess
from virt_exporter import statuspage

REPO = Path(__file__).resolve().parents[2]
# The README's screenshot is made by this test when asked: VIRT_EXPORTER_DOCS_SCREENSHOT=1
DOCS_SCREENSHOT = REPO / "docs" / "status-page.png"

pytestmark = [pytest.mark.libvirt, pytest.mark.timeout(300, func_only=True)]


@pytest.fixture
def exporter():
    # One sample serves /metrics and the page loaded right after it (min-interval 10 s).
    with ExporterProcess(["--libvirt.min-interval", "10"]) as exp:
        exp.scrape()  # a first sample, so the next one has rates
        yield exp


def _rows_by_name(dom: str):
    rows = find_rows(dom, "domains")
    assert rows is not None, "no VM table on the page"
    return {text_of(row.xpath("./td")[0]): row for row in rows}


def test_page_shows_what_metrics_shows_for_every_running_guest(standard_guests, exporter, tmp_path):
    import time
    time.sleep(10.5)  # past the min-interval: the next request takes the sample both will share
    samples = exporter.scrape()
    dom, console = dump_dom(exporter.url + "/")
    assert console == [], console
    rows = _rows_by_name(dom)
    for guest in standard_guests:
        cells = [text_of(td) for td in rows[guest.name].xpath("./td")]
        assert cells[1].startswith("running") and samples.get("libvirt_domain_state", domain=guest.name) == 1
        assert cells[2] == statuspage._mhz(samples.get("libvirt_domain_cpu_usage_mhz", domain=guest.name))
        assert cells[5] == statuspage._bytes(samples.get("libvirt_domain_memory_current_bytes", domain=guest.name))
        assert cells[6] == statuspage._bytes(samples.get("libvirt_domain_memory_rss_bytes", domain=guest.name))
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
