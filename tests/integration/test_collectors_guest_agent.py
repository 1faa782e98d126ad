"""guest_agent collector on a real guest running qemu-guest-agent (tests/testbed.py make_agent_guest):
filesystems against `virsh guestinfo` and against the `df` the guest itself prints on its console, OS
and hostname against `virsh guestinfo`, and a hung agent (its process stopped inside the guest) that
costs no scrape time and shows as down, then up again once it continues.
"""

from __future__ import annotations

import re
import time
from typing import Dict, List, Optional

import pytest

import testbed as tb
from bounds import wait_for
from exporterproc import ExporterProcess
from scrape import Samples

TEST_BOUND_S = 240
pytestmark = [pytest.mark.libvirt, pytest.mark.timeout(TEST_BOUND_S, func_only=True)]

INTERVAL_S = 1.0
TIMEOUT_S = 1.0


@pytest.fixture(scope="module")
def guest(libvirtd):
    bed = tb.Testbed()
    try:
        try:
            g = tb.make_agent_guest(bed)
        except tb.TestbedError as e:
            if "apt-get download" in str(e) or "no cloud kernel package" in str(e):
                pytest.skip("the agent guest's Debian packages cannot be had here: %s" % e)
            raise
        g.wait_agent()
        yield g
    finally:
        bed.cleanup()


@pytest.fixture(scope="module")
def exporter(guest):
    prefix = re.escape(guest.name.rsplit("-", 2)[0] + "-")
    with ExporterProcess(["--libvirt.min-interval", "0", "--libvirt.domain-include", "^" + prefix,
                          "--collector.guest_agent", "--collector.guest_agent.interval", str(INTERVAL_S),
                          "--collector.guest_agent.timeout", str(TIMEOUT_S)]) as exp:
        yield exp


def virsh_guestinfo(name: str, *what: str) -> Dict[str, str]:
    out = {}
    for line in tb.virsh("guestinfo", name, *what).splitlines():
        key, sep, value = line.partition(":")
        if sep:
            out[key.strip()] = value.strip()
    return out


def scrape_until(exp: ExporterProcess, what: str, ok, timeout_s: float = 30.0) -> Samples:
    def scraped() -> Optional[Samples]:
        samples = exp.scrape()
        return samples if ok(samples) else None

    return wait_for(scraped, timeout_s, what, 0.3)


def test_filesystems_os_and_hostname_equal_virsh_guestinfo_and_the_guests_df(exporter, guest):
    samples = scrape_until(exporter, "guest_agent_up 1",
                           lambda s: s.get("libvirt_domain_guest_agent_up", domain=guest.name) == 1)
    info = virsh_guestinfo(guest.name, "--filesystem", "--os", "--hostname")
    count = int(info["fs.count"])
    assert count >= 1, info
    for i in range(count):
        labels = {"domain": guest.name, "mountpoint": info["fs.%d.mountpoint" % i], "fstype": info["fs.%d.fstype" % i]}
        assert samples.get("libvirt_domain_guest_filesystem_size_bytes", **labels) == int(
            info["fs.%d.total-bytes" % i]), labels
        assert samples.get("libvirt_domain_guest_filesystem_used_bytes", **labels) == int(
            info["fs.%d.used-bytes" % i]), labels
    # The guest's own df (printed at boot on its console; nothing writes to the disk since).
    df = guest.console_df()["/mnt/data"]
    labels = {"domain": guest.name, "mountpoint": "/mnt/data", "fstype": "ext4"}
    assert samples.get("libvirt_domain_guest_filesystem_used_bytes", **labels) == df["used"]
    assert samples.get("libvirt_domain_guest_filesystem_size_bytes", **labels) == df["used"] + df["available"]
    # No pseudo-filesystem series.
    fstypes = {lab["fstype"] for lab, _v in samples.series("libvirt_domain_guest_filesystem_size_bytes",
                                                            domain=guest.name)}
    assert fstypes == {"ext4"}, fstypes
    (os_labels, value), = samples.series("libvirt_domain_guest_os_info", domain=guest.name)
    assert value == 1
    assert os_labels["hostname"] == info["hostname"] == "vet-agent-guest"
    assert os_labels["kernel_release"] == info["os.kernel-release"]
    assert os_labels["machine"] == info["os.machine"]
    assert (os_labels["os_id"], os_labels["os_name"], os_labels["os_version_id"]) == (
        info.get("os.id", ""), info.get("os.name", ""), info.get("os.version-id", ""))


def timed_scrape(exp: ExporterProcess) -> tuple:
    t0 = time.monotonic()
    samples = exp.scrape()
    return time.monotonic() - t0, samples


def test_a_hung_agent_costs_no_scrape_time_and_shows_down_then_up(exporter, guest):
    scrape_until(exporter, "guest_agent_up 1",
                 lambda s: s.get("libvirt_domain_guest_agent_up", domain=guest.name) == 1)
    guest.command("stop")
    try:
        # A call to the stopped agent blocks in libvirt without end (`virsh guestinfo` did not
        # return in 120 s here). Every scrape meanwhile must take less than the reader's timeout,
        # which is what it would take at least if a scrape waited for the agent.
        durations: List[float] = []
        down_after = None
        t0 = time.monotonic()
        while time.monotonic() - t0 < INTERVAL_S + TIMEOUT_S + 8:
            seconds, samples = timed_scrape(exporter)
            durations.append(seconds)
            assert samples.get("libvirt_up") == 1
            if samples.get("libvirt_domain_guest_agent_up", domain=guest.name) == 0 and down_after is None:
                down_after = time.monotonic() - t0
                assert not samples.series("libvirt_domain_guest_filesystem_size_bytes", domain=guest.name)
            time.sleep(0.2)
        assert down_after is not None, "agent stopped, but libvirt_domain_guest_agent_up never went to 0"
        assert max(durations) < TIMEOUT_S, "a scrape took %.2fs while the agent hung (timeout %.1fs): %s" % (
            max(durations), TIMEOUT_S, ["%.3f" % d for d in durations])
        print("agent down after %.1fs; %d scrapes while it hung, longest %.3fs" % (
            down_after, len(durations), max(durations)))
    finally:
        guest.command("cont")
    # The blocked call returns once the agent runs again; the domain is read again after it.
    scrape_until(exporter, "guest_agent_up back to 1 after the agent continued",
                 lambda s: s.get("libvirt_domain_guest_agent_up", domain=guest.name) == 1
                 and bool(s.series("libvirt_domain_guest_filesystem_size_bytes", domain=guest.name)))
