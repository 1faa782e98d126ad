"""The exporter in this process (App from CLI flags, as the console script builds it), listening on
127.0.0.1: for tests that also look inside it (the NUMA reader) or want no process start-up cost."""

from __future__ import annotations

import contextlib
import urllib.request
from typing import Iterator, Optional, Tuple

import scrape
from bounds import wait_for
from exporterproc import free_port
from virt_exporter import cli
from virt_exporter.app import App
from virt_exporter.collectors import base, load_all

SCRAPE_TIMEOUT_S = 30
CONNECT_TIMEOUT_S = 30

class InProcessExporter:
    """A running exporter; ``scrape()`` returns {(name, sorted labels): value}."""

    def __init__(self, app: App, port: int) -> None:
        self.app = app
        self.url = "http://127.0.0.1:%d/metrics" % port

    @property
    def numa_reader(self):
        """The reader the CLI wired for the numa collector."""
        return self.app.background.numa

    def scrape(self) -> scrape.Series:
        with urllib.request.urlopen(self.url, timeout=SCRAPE_TIMEOUT_S) as r:
            return scrape.series(r.read().decode())


@contextlib.contextmanager
def running_exporter(*flags: str, only: Optional[Tuple[str, ...]] = None) -> Iterator[InProcessExporter]:
    """The exporter with ``flags`` after the tests' defaults (min-interval 0.5 s, a 20 s libvirt
    timeout), with every default collector, or ``only`` these (fewer stats groups: cheaper calls)."""
    load_all()
    port = free_port()
    if only is not None:
        flags += tuple("--%scollector.%s" % ("" if name in only else "no-", name) for name in base.REGISTRY)
    args = cli.build_parser().parse_args(
        ["--web.listen-address", "127.0.0.1:%d" % port, "--libvirt.min-interval", "0.5",
         "--libvirt.timeout", "20", *flags])
    app = App(args)
    app.start()
    try:
        wait_for(lambda: app.connection.up, CONNECT_TIMEOUT_S, "the exporter's connection to libvirtd", 0.1)
        yield InProcessExporter(app, port)
    finally:
        app.stop()
