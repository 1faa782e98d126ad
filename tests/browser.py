"""Debian's Chromium, headless, for tests that look at a page as a person's browser does: the DOM
after its scripts ran, what the console said, a screenshot."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import List, Optional, Tuple

CHROMIUM_TIMEOUT_S = 90
FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
         "--enable-logging=stderr", "--v=0", "--virtual-time-budget=3000"]


def chromium_path() -> str:
    path = shutil.which("chromium")
    assert path, "chromium not found: scripts/setup.sh installs it (Debian package chromium)"
    return path


def _run(extra: List[str], url: str) -> Tuple[str, List[str]]:
    with tempfile.TemporaryDirectory(prefix="virt-exporter-chromium-") as profile:
        p = subprocess.run([chromium_path(), *FLAGS, "--user-data-dir=%s" % profile, *extra, url],
                           capture_output=True, text=True, timeout=CHROMIUM_TIMEOUT_S)
    console = [line for line in p.stderr.splitlines() if ":CONSOLE" in line]
    assert p.returncode == 0, p.stderr[-3000:]
    return p.stdout, console


def dump_dom(url: str) -> Tuple[str, List[str]]:
    """(the DOM once the page's scripts ran, the console messages)"""
    return _run(["--dump-dom"], url)


def screenshot(url: str, path: Path, size: str = "1400,900") -> List[str]:
    """A PNG of the page at ``path``; the console messages."""
    _dom, console = _run(["--screenshot=%s" % path, "--window-size=%s" % size, "--hide-scrollbars"], url)
    assert path.exists() and path.stat().st_size > 1000, "no screenshot written"
    return console


def text_of(element) -> str:
    return " ".join(element.text_content().split())


def find_rows(dom: str, table_id: str) -> Optional[list]:
    import lxml.html

    root = lxml.html.fromstring(dom)
    tables = root.xpath('//table[@id="%s"]' % table_id)
    return tables[0].xpath("./tbody/tr") if tables else None
