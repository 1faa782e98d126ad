"""Job metrics against `virsh domjobinfo --rawstats` taken in the same window, during a migration
slowed with --bandwidth (a guest that filled 16 MiB, 2 MiB/s: about 8 s).

Each check is a bracket: virsh before, a scrape, virsh after. The exporter reads the job every
0.25 s, so its reading may predate the first virsh read a little; every reading is a point of the
same job, though, so it must sit on virsh's curve: a reading from an earlier elapsed time must not
show more data processed than virsh's first read, one from a later time not less than its second."""

from __future__ import annotations

import json
import subprocess
import time
from typing import Dict, List, Tuple

import pytest

from scrape import Samples

from .conftest import HOST_URI, exporter_at, migrate_argv, virsh_at

pytestmark = [pytest.mark.timeout(180, func_only=True)]

BANDWIDTH_MIB_S = 2
# The exporter's reading is at most this much older than a virsh read taken just before the scrape
# (0.25 s read interval, a loaded host).
FRESH_MS = 1500
JOB_TYPE_UNBOUNDED = 2
OPERATION_MIGRATION_OUT = 5


def domjobinfo(name: str) -> Dict[str, float]:
    out = virsh_at(HOST_URI, "domjobinfo", "--rawstats", name, check=False)  # gone once migrated
    stats = {}
    for line in out.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            key = "type" if key.strip() == "Job type" else key.strip()  # virsh's one non-raw line
            try:
                stats[key] = float(value)
            except ValueError:
                pass
    return stats


# virsh key -> (metric, scale to virsh's unit)
METRICS = {"time_elapsed": ("libvirt_domain_job_elapsed_seconds", 1000),
           "data_processed": ("libvirt_domain_job_data_processed_bytes", 1),
           "data_remaining": ("libvirt_domain_job_data_remaining_bytes", 1),
           "data_total": ("libvirt_domain_job_data_total_bytes", 1),
           "memory_bps": ("libvirt_domain_job_memory_transfer_rate_bytes_per_second", 1),
           "memory_iteration": ("libvirt_domain_job_memory_iteration", 1),
           "memory_postcopy_requests": ("libvirt_domain_job_memory_postcopy_requests", 1),
           "downtime": ("libvirt_domain_job_expected_downtime_seconds", 1000),
           "dirty_bytes": ("libvirt_domain_job_memory_dirty_rate_bytes_per_second", 1)}


def exporter_job(samples: Samples, name: str) -> Dict[str, float]:
    out = {}
    for key, (metric, scale) in METRICS.items():
        value = samples.get(metric, domain=name)
        if value is not None:
            out[key] = value * scale
    return out


def check_window(before: Dict[str, float], got: Dict[str, float], after: Dict[str, float]) -> List[str]:
    for s in (before, after):
        if "memory_dirty_rate" in s:
            s["dirty_bytes"] = s["memory_dirty_rate"] * s.get("memory_page_size", 4096)
    # what virsh shows in both reads, the exporter must show (QEMU fills some in after the set-up:
    # a reading older than virsh's first may lack them)
    if got.get("time_elapsed", 0) >= before["time_elapsed"]:
        bad = ["%s missing" % METRICS[k][0] for k in METRICS if k in before and k in after and k not in got]
    else:
        bad = [] if "time_elapsed" in got else ["libvirt_domain_job_elapsed_seconds missing"]
    if bad:
        return bad
    e_b, e_a, e = before["time_elapsed"], after["time_elapsed"], got["time_elapsed"]
    if not e_b - FRESH_MS <= e <= e_a:
        bad.append("elapsed %d ms outside [%d - %d, %d]" % (e, e_b, FRESH_MS, e_a))
    if e >= e_b and got["data_processed"] < before["data_processed"]:
        bad.append("processed %d < virsh's %d read earlier" % (got["data_processed"], before["data_processed"]))
    if e <= e_a and got["data_processed"] > after["data_processed"]:
        bad.append("processed %d > virsh's %d read later" % (got["data_processed"], after["data_processed"]))
    if before["memory_iteration"] == after["memory_iteration"] and e_b <= e <= e_a:
        for key in ("memory_iteration", "data_total", "memory_postcopy_requests", "downtime", "dirty_bytes"):
            if key in got and key in before and got[key] != before[key]:
                bad.append("%s %r != virsh %r" % (key, got[key], before[key]))
        if e >= e_b and got["data_remaining"] > before["data_remaining"]:
            bad.append("remaining %d > virsh's %d read earlier" % (got["data_remaining"], before["data_remaining"]))
    # QEMU re-measures the transfer rate ten times a second (it swings by ~5 % around the cap here):
    # a reading taken between the two virsh reads lies within 10 % of theirs
    bps = [before.get("memory_bps", 0), after.get("memory_bps", 0)]
    if e_b <= e <= e_a and "memory_bps" in got and not min(bps) * 0.9 <= got["memory_bps"] <= max(bps) * 1.1:
        bad.append("transfer rate %r outside virsh's %r" % (got["memory_bps"], bps))
    return bad


def test_job_metrics_agree_with_domjobinfo_during_a_capped_migration(bed, hv2):
    guest = bed.make_guest("filler", interface=False, iothread=False, persistent=False)
    guest.wait_booted()
    time.sleep(6)  # the filler's pass over its 16 MiB
    with exporter_at(HOST_URI) as exp:
        assert exp.scrape().series("libvirt_domain_job_info") == [], "a job before any migration"
        proc = subprocess.Popen(migrate_argv(guest.name, HOST_URI, hv2, BANDWIDTH_MIB_S),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        windows: List[Tuple[Dict[str, float], Dict[str, float], Dict[str, float]]] = []
        infos = []
        pages = []
        try:
            deadline = time.monotonic() + 60
            while proc.poll() is None and time.monotonic() < deadline:
                before = domjobinfo(guest.name)
                time.sleep(0.35)  # past the exporter's read interval: its reading is newer than `before`
                samples = exp.scrape()
                after = domjobinfo(guest.name)
                if before.get("type") == JOB_TYPE_UNBOUNDED and after.get("type") == JOB_TYPE_UNBOUNDED \
                        and samples.series("libvirt_domain_job_info", domain=guest.name):
                    infos.append(samples.series("libvirt_domain_job_info", domain=guest.name))
                    windows.append((before, exporter_job(samples, guest.name), after))
                    if len(pages) < 2:
                        pages.append((json.loads(exp.get("/", {"Accept": "application/json"})[2]),
                                      exp.get("/", {"Accept": "text/html"})[2].decode()))
                time.sleep(0.3)
            _out, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 0, err
        completed = exp.scrape()
    assert len(windows) >= 5, "only %d windows with a running job seen by both" % len(windows)
    for series in infos:
        assert series == [({"domain": guest.name, "type": "unbounded", "operation": "migration_out"}, 1.0)]
    assert all(w[0]["operation"] == OPERATION_MIGRATION_OUT for w in windows)
    failures = ["window %d: %s" % (i, "; ".join(bad)) for i, w in enumerate(windows) if (bad := check_window(*w))]
    assert not failures, "\n".join(failures)
    inside = [w for w in windows if w[0]["time_elapsed"] <= w[1]["time_elapsed"] <= w[2]["time_elapsed"]]
    assert len(inside) >= 3, "only %d readings taken between the two virsh reads" % len(inside)
    # the exporter follows the job, not one reading: processed grows across the windows
    processed = [w[1]["data_processed"] for w in windows]
    assert processed[-1] > processed[0] + BANDWIDTH_MIB_S * 2 ** 20, processed
    # the status page lists it as a running job
    assert pages
    for view, html in pages:
        (job,) = view["jobs"]
        assert job["domain"] == guest.name and job["operation"] == "migration_out" and job["iteration"] >= 1
        assert 0 < job["processed_bytes"] < 64 << 20 and job["transfer_bytes_per_s"] > 0
        assert "Running jobs" in html and guest.name in html.split("Running jobs", 1)[1]
    # and the job is gone once it completed, counted once
    assert completed.series("libvirt_domain_job_info", domain=guest.name) == []
    assert completed.get("libvirt_domain_jobs_completed_total", operation="migration_out", outcome="completed") == 1
