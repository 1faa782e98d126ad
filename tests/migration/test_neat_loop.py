"""Neat's loop, closed, across two hypervisors in one real Prometheus (contrib's file_sd scrape
config): with the overload factor lowered to 0 in a test copy of the rules, LibvirtMigrationCandidate
names the VM with the least memory on the host; the test migrates that VM to the second hypervisor;
the candidate alert for it clears on the source, and its MHz appears on the destination, under the
same domain, from the destination's exporter."""

from __future__ import annotations

import pytest

from bounds import wait_for
from perfmon.promstack import query

from .conftest import HOST_URI, exporter_at, migrate, rules_copy, start_fleet_prometheus

pytestmark = [pytest.mark.prometheus, pytest.mark.timeout(240, func_only=True)]


def test_candidate_named_migrated_cleared_on_source_and_mhz_on_destination(bed, hv2, tmp_path):
    big = bed.make_guest("busy", memory_mib=64, interface=False, iothread=False, persistent=False)
    small = bed.make_guest("idle", memory_mib=32, interface=False, iothread=False, persistent=False)
    big.wait_booted()
    small.wait_booted()
    # Only this test's VMs: the host is shared with other tests' guests, which would compete.
    mine = ["--libvirt.domain-include", "^(%s|%s)$" % (big.name, small.name)]
    rules = [rules_copy(tmp_path, "cpu", {"cpu_overload_ratio": 0}), rules_copy(tmp_path, "neat")]
    with exporter_at(HOST_URI, *mine) as host_exp, exporter_at(hv2, *mine) as hv2_exp:
        prom = start_fleet_prometheus(tmp_path / "prom", ["localhost:%d" % host_exp.port,
                                                          "127.0.0.1:%d" % hv2_exp.port], rules)
        try:
            candidate = 'ALERTS{alertname="LibvirtMigrationCandidate",alertstate="firing",instance="localhost"}'
            firing = wait_for(lambda: query(prom, candidate), 90, "a migration candidate on the host")
            named = firing[0]["metric"]["domain"]
            assert named == small.name, firing  # the least memory, as virsh defines them
            migrate(named, HOST_URI, hv2)
            wait_for(lambda: not query(prom, candidate + ' and on (domain) ALERTS{domain="%s"}' % named) or None,
                     60, "the candidate alert for %s cleared on the source" % named)
            mhz = wait_for(lambda: query(prom, 'libvirt_domain_cpu_usage_mhz{instance="127.0.0.1",domain="%s"}'
                                         % named), 60, "MHz of %s on the destination" % named)
            assert float(mhz[0]["value"][1]) >= 0
            assert not query(prom, 'libvirt_domain_cpu_usage_mhz{instance="localhost",domain="%s"}' % named)
            # the other VM, still on the overloaded source, is its candidate now
            wait_for(lambda: [a["metric"]["domain"] for a in query(prom, candidate)] == [big.name] or None, 60,
                     "the remaining VM named on the source")
        finally:
            prom.stop()
