"""Churn against the real test bed (issue 8, "Done when"): 60 s of guests defined, started, destroyed
and undefined continuously while scraping at 10 scrapes/s, with the exporter's defaults (a scrape
within --libvirt.min-interval of the last sample reuses it) — no failed response, and no series of a
destroyed guest after the next scrape (a destroyed, still defined guest keeps its info and state
series only; an undefined one has none).
"""

from __future__ import annotations

import random
import shutil
import subprocess
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, List, Optional, Set, Tuple

import pytest

import testbed as tb
from bounds import wait_for
from exporterproc import ExporterProcess
from scrape import Samples

TEST_BOUND_S = 150
pytestmark = [pytest.mark.libvirt, pytest.mark.timeout(TEST_BOUND_S, func_only=True)]

WINDOW_S = 60.0
SCRAPE_EVERY_S = 0.1       # 10 scrapes/s
CHURNERS = 2
# Identity, state, and the two configuration flags (a shut-off domain that starts with the host is
# what libvirt_domain_autostart is most often asked about).
INACTIVE_NAMES = {"libvirt_domain_info", "libvirt_domain_state", "libvirt_domain_state_reason",
                  "libvirt_domain_autostart", "libvirt_domain_persistent"}


def virsh(*args: str) -> None:
    """virsh, once more after libvirtd answers again should another test on this host restart it
    under us (the churn is the fault under test here, not that); every step is checked to have
    happened, so a command that did its work before the disconnect is not an error."""
    try:
        tb.virsh(*args, timeout=60)
        return
    except tb.TestbedError as e:
        if not any(m in str(e) for m in ("Disconnected", "End of file", "Failed to connect", "Cannot recv")):
            raise
    wait_for(lambda: subprocess.run(["virsh", "-q", "-c", tb.URI, "version"], capture_output=True,
                                    timeout=30).returncode == 0, 30, "libvirtd back", 0.5)
    verb, name = args[0], args[-1]
    done = {"start": lambda: tb.domain_active(name), "destroy": lambda: not tb.domain_active(name),
            "undefine": lambda: not tb.domain_exists(name)}.get(verb)
    if done is None or not done():
        tb.virsh(*args, timeout=60)


class Churner(threading.Thread):
    """Defines, starts, destroys and undefines guests named <testbed prefix>churn<k>-<n>, one at a
    time, on its own blank disk; records when each was destroyed and undefined (after virsh returned)."""

    def __init__(self, prefix: str, k: int, disk: Path, until: float) -> None:
        super().__init__(daemon=True)
        self.prefix, self.k, self.disk, self.until = prefix, k, disk, until
        self.events: List[Tuple[str, str, float]] = []   # (name, "destroyed" | "undefined", at)
        self.names: List[str] = []
        self.error: Optional[BaseException] = None
        self.current: Optional[str] = None

    def run(self) -> None:
        rnd = random.Random(self.k)
        n = 0
        try:
            while time.monotonic() < self.until:
                n += 1
                name = "%schurn%d-%d" % (self.prefix, self.k, n)
                xml = tb.build_domain_xml(name, str(self.disk), iothread=True)
                with tempfile.NamedTemporaryFile("w", suffix=".xml") as f:
                    f.write(xml)
                    f.flush()
                    self.current = name
                    self.names.append(name)
                    virsh("define", f.name)
                virsh("start", name)
                time.sleep(rnd.uniform(0.5, 2.0))
                virsh("destroy", name)
                self.events.append((name, "destroyed", time.monotonic()))
                time.sleep(rnd.uniform(0.2, 1.0))
                virsh("undefine", name)
                self.events.append((name, "undefined", time.monotonic()))
                self.current = None
        except BaseException as e:  # reported by the test
            self.error = e

    def cleanup(self) -> None:
        for name in self.names:
            if tb.domain_active(name):
                subprocess.run(["virsh", "-q", "-c", tb.URI, "destroy", name], capture_output=True, timeout=60)
            if tb.domain_exists(name):
                subprocess.run(["virsh", "-q", "-c", tb.URI, "undefine", name], capture_output=True, timeout=60)


def test_churn_while_scraping(testbed) -> None:
    directory = tb.IMAGE_DIR / (testbed.prefix + "churn-disks")
    directory.mkdir(parents=True, exist_ok=True)
    disks = []
    for k in range(CHURNERS):
        disk = directory / ("disk%d.qcow2" % k)
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "64M"], check=True, timeout=60)
        disks.append(disk)
    scrapes: List[Tuple[float, float, int, Dict[str, Set[str]], Dict[str, float]]] = []
    failures: List[str] = []
    lock = threading.Lock()
    with ExporterProcess([]) as exp:
        def scrape() -> None:
            t0 = time.monotonic()
            try:
                status, _h, body = exp.get(timeout_s=15.0)
            except Exception as e:  # a failed response is what this test counts
                with lock:
                    failures.append("%s" % e)
                return
            t1 = time.monotonic()
            if status != 200:
                with lock:
                    failures.append("HTTP %d: %r" % (status, body[:200]))
                return
            samples = Samples.parse(body.decode())
            mine: Dict[str, Set[str]] = {}
            states: Dict[str, float] = {}
            for (metric, labels), value in samples.values.items():
                domain = dict(labels).get("domain", "")
                if domain.startswith(testbed.prefix + "churn"):
                    mine.setdefault(domain, set()).add(metric)
                    if metric == "libvirt_domain_state":
                        states[domain] = value
            with lock:
                scrapes.append((t0, t1, status, mine, states))

        until = time.monotonic() + WINDOW_S
        churners = [Churner(testbed.prefix, k, disks[k], until) for k in range(CHURNERS)]
        try:
            for c in churners:
                c.start()
            with ThreadPoolExecutor(16) as pool:
                next_at = time.monotonic()
                while next_at < until:
                    time.sleep(max(0.0, next_at - time.monotonic()))
                    pool.submit(scrape)
                    next_at += SCRAPE_EVERY_S
            for c in churners:
                c.join(120)
        finally:
            for c in churners:
                c.cleanup()
            shutil.rmtree(directory, ignore_errors=True)
        log = exp.log()
    for c in churners:
        assert c.error is None, "churner %d: %r" % (c.k, c.error)
    assert not failures, failures[:5]
    assert len(scrapes) >= WINDOW_S / SCRAPE_EVERY_S * 0.9
    events = [e for c in churners for e in c.events]
    assert len([e for e in events if e[1] == "undefined"]) >= 10, "too little churn: %d guests" % len(events)
    scrapes.sort()
    violations = []
    for name, what, at in events:
        # "the next scrape": the first one that started after virsh returned; from its end on, nothing
        next_scrape = next((s for s in scrapes if s[0] >= at), None)
        if next_scrape is None:
            continue
        settled = next_scrape[1]
        later = [s for s in scrapes if s[0] >= settled]
        for t0, _t1, _st, mine, states in later:
            # a later event about the same guest (undefine after destroy) is judged on its own
            if what == "destroyed" and any(n == name and w == "undefined" and a <= t0 for n, w, a in events):
                break
            names = mine.get(name, set())
            if what == "undefined" and names:
                violations.append("%s undefined %.2fs before a scrape that has %s" % (name, t0 - at, sorted(names)))
            if what == "destroyed" and (names - INACTIVE_NAMES or states.get(name, 5) != 5):
                violations.append("%s destroyed %.2fs before a scrape that has %s (state %s)"
                                  % (name, t0 - at, sorted(names - INACTIVE_NAMES), states.get(name)))
    assert not violations, violations[:5]
    assert "Traceback" not in log, log[log.find("Traceback") - 500:][:3000]
    print("%d scrapes, %d guests churned, longest scrape %.3fs" % (
        len(scrapes), len({e[0] for e in events}), max(s[1] - s[0] for s in scrapes)))
