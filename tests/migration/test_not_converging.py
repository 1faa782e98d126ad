"""A migration that cannot converge, in a real Prometheus: a guest rewriting 2 MiB of memory without
pause, migrated at 1 MiB/s. LibvirtDomainMigrationNotConverging fires for it (the shipped rule, its
`for` set to 0 in a test copy); `virsh domjobabort` then ends the job, the exporter counts a job that
did not complete, LibvirtDomainJobFailed fires, and the guest runs on where it was."""

from __future__ import annotations

import subprocess

import pytest

from bounds import wait_for
from perfmon.promstack import query

from .conftest import HOST_URI, exporter_at, migrate_argv, rules_copy, running_at, start_fleet_prometheus, virsh_at

pytestmark = [pytest.mark.prometheus, pytest.mark.timeout(240, func_only=True)]


def test_not_converging_fires_and_the_abort_counts_as_a_failed_job(bed, hv2, tmp_path):
    guest = bed.make_guest("dirtier", interface=False, iothread=False, persistent=False)
    guest.wait_booted()
    rules = rules_copy(tmp_path, "job")
    with exporter_at(HOST_URI) as host_exp, exporter_at(hv2) as hv2_exp:
        prom = start_fleet_prometheus(tmp_path / "prom", ["localhost:%d" % host_exp.port,
                                                          "127.0.0.1:%d" % hv2_exp.port], [rules])
        proc = subprocess.Popen(migrate_argv(guest.name, HOST_URI, hv2, 1), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        try:
            firing = wait_for(lambda: query(prom, 'ALERTS{alertname="LibvirtDomainMigrationNotConverging",'
                                                  'alertstate="firing"}'), 90, "NotConverging firing")
            info = virsh_at(HOST_URI, "domjobinfo", guest.name)
            print(info)
            assert [a["metric"]["domain"] for a in firing] == [guest.name]
            assert firing[0]["metric"]["instance"] == "localhost"  # the source host
            assert proc.poll() is None, "the migration ended by itself: %s" % (proc.communicate(),)
            assert not query(prom, 'libvirt_domain_jobs_completed_total{outcome=~"failed|cancelled"}')
            virsh_at(HOST_URI, "domjobabort", guest.name)
            _out, err = proc.communicate(timeout=60)
            assert proc.returncode != 0 and "abort" in err, err
            failed = wait_for(lambda: query(prom, 'libvirt_domain_jobs_completed_total'
                                                  '{instance="localhost",outcome=~"failed|cancelled"} == 1'),
                              30, "the aborted job counted")
            assert failed[0]["metric"]["operation"] == "migration_out"
            wait_for(lambda: query(prom, 'ALERTS{alertname="LibvirtDomainJobFailed",alertstate="firing",'
                                         'instance="localhost"}'), 30, "JobFailed firing")
            wait_for(lambda: not query(prom, 'ALERTS{alertname="LibvirtDomainMigrationNotConverging"}') or None,
                     30, "NotConverging resolved once the job is gone")
        finally:
            if proc.poll() is None:
                proc.kill()
            prom.stop()
    assert guest.name in running_at(HOST_URI) and guest.name not in running_at(hv2)
