"""--libvirt.domain-include / -exclude against the real test bed: what is cut, what is kept, and that
the hypervisor overhead of a filtered exporter still subtracts the CPU of the domains it hides."""

from __future__ import annotations

import time

import pytest

from exporterproc import ExporterProcess

pytestmark = [pytest.mark.libvirt, pytest.mark.timeout(180, func_only=True)]

OVERHEAD = "libvirt_host_hypervisor_overhead_mhz"
MHZ = "libvirt_domain_cpu_usage_mhz"
WINDOW_S = 5.0
WINDOW_TRIES = 3


def _domains(samples, names):
    return {n for n in names if samples.names_for_domain(n)}


def test_exclude_and_include_cut_every_series_of_a_domain(standard_guests):
    busy, idle, blank = standard_guests
    ours = {busy.name, idle.name, blank.name}
    with ExporterProcess(["--libvirt.min-interval", "0", "--libvirt.timeout", "20",
                          "--libvirt.domain-exclude", "^%s$" % busy.name]) as exp:
        s = exp.scrape()
        assert _domains(s, ours) == {idle.name, blank.name}
        assert s.names_for_domain(busy.name) == []
        assert "libvirt_domain_info" in s.names_for_domain(idle.name)
    # anywhere in the name, as node_exporter's include/exclude flags: "-idle-" picks the idle guest
    # (a value starting with "-" is given with "=")
    with ExporterProcess(["--libvirt.min-interval", "0", "--libvirt.timeout", "20",
                          "--libvirt.domain-include=-idle-"]) as exp:
        assert _domains(exp.scrape(), ours) == {idle.name}


def test_overhead_of_a_filtered_exporter_still_accounts_for_hidden_domains(standard_guests):
    busy = standard_guests.busy
    busy.wait_booted()
    common = ["--libvirt.min-interval", "0", "--libvirt.timeout", "20"]
    with ExporterProcess(common) as whole, \
            ExporterProcess(common + ["--libvirt.domain-exclude", "^%s$" % busy.name]) as cut:
        # The same window for both: scrape them back to back at its start and its end. A window in
        # which some domain on the host started or stopped has no overhead at all: take another.
        for _attempt in range(WINDOW_TRIES):
            whole.scrape(), cut.scrape()
            time.sleep(WINDOW_S)
            w, c = whole.scrape(), cut.scrape()
            if w.get(OVERHEAD) is not None and c.get(OVERHEAD) is not None:
                break
    busy_mhz = w.get(MHZ, domain=busy.name)
    assert busy_mhz is not None and c.get(MHZ, domain=busy.name) is None
    ovh_w, ovh_c = w.get(OVERHEAD), c.get(OVERHEAD)
    assert ovh_w is not None and ovh_c is not None, (
        "overhead withheld in %d windows: domains kept starting or stopping on this host" % WINDOW_TRIES)
    print("busy guest %.0f MHz; overhead whole %.0f, filtered %.0f MHz" % (busy_mhz, ovh_w, ovh_c))
    # Counting the hidden guest as overhead would add its whole MHz to the filtered figure.
    assert busy_mhz > 200, "the busy guest got too little CPU for this comparison to mean anything"
    assert abs(ovh_c - ovh_w) < 0.5 * busy_mhz
