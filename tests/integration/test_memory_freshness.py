"""The two series the memory alerts read that libvirt's host figures lack, against their references on
the test bed: MemAvailable against /proc/meminfo (LibvirtHostMemoryLow), and a guest's balloon
last-update against ``virsh domstats --balloon`` (LibvirtDomainGuestMemoryStatsStale)."""

from __future__ import annotations

import pytest

import testbed as tb
from exporterproc import ExporterProcess

pytestmark = [pytest.mark.libvirt, pytest.mark.timeout(240, func_only=True)]

KIB = 1024
# MemAvailable moves while the scrape runs (other tests share the host): the exported value must lie
# within the readings taken just before and just after it, widened by this much.
DRIFT_BYTES = 32 << 20


def _mem_available_bytes() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * KIB
    raise AssertionError("no MemAvailable in /proc/meminfo")


def test_mem_available_matches_proc_meminfo(libvirtd):
    with ExporterProcess(["--libvirt.min-interval", "0"]) as ex:
        for _ in range(3):
            before = _mem_available_bytes()
            value = ex.scrape().get("libvirt_host_memory_available_bytes")
            after = _mem_available_bytes()
            assert value is not None, "libvirt_host_memory_available_bytes missing"
            print("MemAvailable %d .. exported %d .. %d" % (before, value, after))
            assert min(before, after) - DRIFT_BYTES <= value <= max(before, after) + DRIFT_BYTES
            # not MemFree: on a host with page cache the two differ by far more than the drift
            assert value != ex.scrape().get("libvirt_host_memory_free_bytes")


def test_balloon_last_update_matches_virsh_domstats(testbed):
    guest = testbed.make_guest("idle")
    guest.wait_booted()
    tb.virsh("dommemstat", guest.name, "--period", "5", "--live")
    with ExporterProcess(["--libvirt.min-interval", "0", "--libvirt.domain-include", "^%s$" % guest.name]) as ex:
        reference = tb.virsh_domstats(guest.name, "balloon")
        exported = ex.scrape().get("libvirt_domain_memory_stats_last_update_timestamp_seconds", domain=guest.name)
        reference_after = tb.virsh_domstats(guest.name, "balloon")
    assert "balloon.last-update" in reference, reference
    print("balloon.last-update: virsh %s, exported %s" % (reference["balloon.last-update"], exported))
    # this guest has no OS, so no balloon driver: QEMU reports 0 ("never"), which the stale alert counts
    assert exported in (reference["balloon.last-update"], reference_after["balloon.last-update"])
