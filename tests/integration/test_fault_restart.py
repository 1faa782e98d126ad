"""Reconnect against the real test bed (issue 8, "Done when"): libvirtd killed and restarted during 30 s
of scraping at 5 scrapes/s — no failed HTTP response, no traceback, libvirt_up 0 then 1, and rates
that go on across the outage; and a guest restarted between two samples gets no rate.

libvirtd is stopped with SIGTERM by the pid in /run/libvirtd.pid and started again with
``libvirtd -d``; a ``finally`` starts it again whatever happened (scripts/testbed.sh daemon).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Iterator, List, Optional, Tuple

import pytest

import testbed as tb
from bounds import wait_for
from exporterproc import ExporterProcess
from scrape import Samples

TEST_BOUND_S = 120
pytestmark = [pytest.mark.libvirt, pytest.mark.timeout(TEST_BOUND_S, func_only=True)]

LIBVIRTD_PID = Path("/run/libvirtd.pid")
SCRAPE_INTERVAL_S = 0.2   # 5 scrapes/s
WINDOW_S = 30.0


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def restart_libvirtd() -> Tuple[float, float]:
    """SIGTERM libvirtd, wait for it to exit, start it again, wait until it answers. Returns (killed
    at, answering at), monotonic."""
    pid = int(LIBVIRTD_PID.read_text().strip())
    killed_at = time.monotonic()
    os.kill(pid, signal.SIGTERM)
    wait_for(lambda: not pid_alive(pid), 20, "libvirtd %d to exit after SIGTERM" % pid, 0.05)
    subprocess.run(["/usr/sbin/libvirtd", "-d"], check=True, timeout=30)
    wait_for(lambda: subprocess.run(["virsh", "-q", "-c", tb.URI, "version"], capture_output=True,
                                    timeout=30).returncode == 0, 40, "libvirtd to answer after its restart", 0.1)
    return killed_at, time.monotonic()


@contextlib.contextmanager
def libvirtd_restored() -> Iterator[None]:
    try:
        yield
    finally:
        tb.ensure_daemon()  # idempotent: starts libvirtd only if it is not running


class Scraper(threading.Thread):
    """Scrapes every SCRAPE_INTERVAL_S for WINDOW_S; records (start, duration, status, libvirt_up)."""

    def __init__(self, exp: ExporterProcess, guest: str) -> None:
        super().__init__(daemon=True)
        self.exp, self.guest = exp, guest
        self.records: List[Tuple[float, float, int, Optional[float], Optional[float]]] = []
        self.errors: List[str] = []

    def run(self) -> None:
        t_end = time.monotonic() + WINDOW_S
        next_at = time.monotonic()
        while next_at < t_end:
            time.sleep(max(0.0, next_at - time.monotonic()))
            next_at += SCRAPE_INTERVAL_S
            t0 = time.monotonic()
            try:
                status, _h, body = self.exp.get(timeout_s=15.0)
                samples = Samples.parse(body.decode()) if status == 200 else None
            except Exception as e:  # any failure is what this test counts
                self.errors.append("%.1fs: %s" % (t0, e))
                continue
            up = samples.get("libvirt_up") if samples else None
            mhz = samples.get("libvirt_domain_cpu_usage_mhz", domain=self.guest) if samples else None
            self.records.append((t0, time.monotonic() - t0, status, up, mhz))


def test_libvirtd_restart_while_scraping(testbed) -> None:
    guest = testbed.make_guest("busy")
    # faulthandler: should libvirt's client library crash the process, its log says where.
    with libvirtd_restored(), ExporterProcess(["--libvirt.min-interval", "0"],
                                              env={"PYTHONFAULTHANDLER": "1"}) as exp:
        wait_for(lambda: exp.scrape().get("libvirt_domain_cpu_usage_mhz", domain=guest.name) is not None, 30,
                 "the guest's MHz before the restart", 0.3)
        scraper = Scraper(exp, guest.name)
        scraper.start()
        time.sleep(5.0)
        killed_at, answering_at = restart_libvirtd()
        scraper.join(WINDOW_S + 20)
        log = exp.log()
        exited = exp.proc.poll()
    records = scraper.records
    assert exited is None, "the exporter exited (%s): %s" % (exited, log[-5000:])
    assert not scraper.errors, scraper.errors[:5]
    assert all(status == 200 for _t, _d, status, _u, _m in records), [r for r in records if r[2] != 200][:5]
    assert len(records) >= WINDOW_S / SCRAPE_INTERVAL_S * 0.8, "only %d scrapes in %.0f s" % (len(records), WINDOW_S)
    assert max(d for _t, d, _s, _u, _m in records) < 5.0 + 1.0, "a scrape took longer than the deadline"
    ups = [u for _t, _d, _s, u, _m in records]
    first_down = ups.index(0.0)
    assert 1.0 in ups[:first_down], "libvirt_up was not 1 before the restart"
    assert 1.0 in ups[first_down:], "libvirt_up never came back to 1"
    back = first_down + ups[first_down:].index(1.0)
    back_at = records[back][0]
    assert back_at - answering_at < 5.0, "reconnected %.1fs after libvirtd answered again" % (back_at - answering_at)
    # The sample before the outage is kept as the previous one: the guest's counters went on
    # (same domain ID, cpu.time monotone), so its rate is there in the very first scrape after it.
    assert records[back][4] is not None, "no MHz in the first scrape after the reconnect"
    assert all(r[4] is not None for r in records[back:] if r[3] == 1.0)
    assert "Traceback" not in log, log[log.find("Traceback") - 500:][:3000]
    print("libvirtd killed at +%.1fs, answering at +%.1fs, libvirt_up 1 again at +%.1fs; %d scrapes, "
          "longest %.3fs" % (killed_at - records[0][0], answering_at - records[0][0], back_at - records[0][0],
                             len(records), max(d for _t, d, _s, _u, _m in records)))


def test_a_restarted_guest_gets_no_rate_across_its_restart(testbed) -> None:
    """The guest runs longer after its restart than before it, so its cpu.time grew all the same: only
    its new domain ID tells the exporter the two readings are not comparable."""
    guest = testbed.make_guest("busy")
    with ExporterProcess(["--libvirt.min-interval", "0"]) as exp:
        time.sleep(1.0)
        before = exp.scrape()
        cpu_before = before.get("libvirt_domain_cpu_seconds_total", domain=guest.name)
        assert cpu_before is not None
        guest.destroy()
        guest.start()
        # The exporter sees the stop and start only as events; no scrape in between. Let the new
        # QEMU spin past the old cpu.time.
        wait_for(lambda: float(tb.virsh_domstats(guest.name, "cpu")["cpu.time"]) / 1e9 >= cpu_before + 1.0, 40,
                 "the restarted guest to pass its old cpu.time", 0.5)
        after = exp.scrape()
        assert after.get("libvirt_domain_cpu_seconds_total", domain=guest.name) > cpu_before
        assert after.get("libvirt_domain_cpu_usage_mhz", domain=guest.name) is None, \
            "a rate across the guest's restart"
        again = exp.scrape()
        assert again.get("libvirt_domain_cpu_usage_mhz", domain=guest.name) is not None
