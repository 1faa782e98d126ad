"""The decision rules of alerts/ on the real test bed, in a real Prometheus scraping the exporter:
a busy guest sharing the host's two CPUs with a CPU burner shows vCPU steal, and while the host is
overloaded (the generator's knobs: overload ratio 0, every `for` 0s, the neat group on) the
migration candidate is the running VM with the least memory, as virsh reports it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import pytest

import testbed as tb
from bounds import wait_for
from exporterproc import ExporterProcess
from perfmon.promstack import query, start_prometheus
from virt_exporter.mixin.config import FOR, parse_config
from virt_exporter.mixin.rules import rule_files

JOB = "virt-exporter"  # promstack's scrape job

pytestmark = [pytest.mark.libvirt, pytest.mark.prometheus, pytest.mark.timeout(300, func_only=True)]


def rules_lowered(tmp_path: Path) -> List[Path]:
    """cpu, capacity, neat and vcpu rules from the generator, for this Prometheus's job, with the overload
    ratio at 0 and every `for` at 0s (the thresholds and waits are what the promtool tests pin; here the
    wiring with real series is under test)."""
    cfg = parse_config({"job_selector": 'job="%s"' % JOB, "groups": {"neat": True},
                        "thresholds": {"cpu_overload_ratio": 0}, "for": {name: "0s" for name in FOR}})
    files = rule_files(cfg)
    out = []
    for name in ("cpu", "capacity", "neat", "vcpu"):
        path = tmp_path / ("%s.rules.yml" % name)
        path.write_text(files["%s.rules.yml" % name])
        out.append(path)
    return out


def running_memory_kib() -> Dict[str, int]:
    """balloon.current of every running domain of the host (virsh domstats)."""
    stats = tb.parse_domstats(tb.virsh("domstats", "--raw", "--balloon", "--list-active"))
    return {name: int(s["balloon.current"]) for name, s in stats.items() if "balloon.current" in s}


def test_steal_under_a_cpu_burner_and_the_smallest_guest_as_migration_candidate(testbed, tmp_path):
    busy = testbed.make_guest("busy")
    small = testbed.make_guest("idle", memory_mib=32)
    busy.wait_booted()
    small.wait_booted()
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        with ExporterProcess(["--libvirt.min-interval", "0"]) as exporter:
            prom = start_prometheus(tmp_path / "prom", "127.0.0.1:%d" % exporter.port, None, interval_s=1,
                                    rule_files=rules_lowered(tmp_path))
            try:
                steal = wait_for(lambda: query(prom, 'domain:libvirt_vcpu_steal:ratio{domain="%s"} > 0' % busy.name),
                                 60, "vCPU steal of the busy guest above 0")
                print("steal of %s: %s" % (busy.name, steal[0]["value"][1]))
                firing = wait_for(lambda: query(prom, 'ALERTS{alertname="LibvirtMigrationCandidate",'
                                                      'alertstate="firing"}'), 60, "a migration candidate")
                overload = query(prom, 'ALERTS{alertname="LibvirtHostCpuOverload",alertstate="firing"}')
                memory = running_memory_kib()
            finally:
                prom.stop()
    finally:
        for b in burners:
            b.kill()
            b.wait(10)
    assert overload, "the candidate fires only while the overload does"
    smallest = min(memory.values())
    expected = {name for name, kib in memory.items() if kib == smallest}
    assert [a["metric"]["domain"] for a in firing] == [firing[0]["metric"]["domain"]]  # one per host
    assert firing[0]["metric"]["domain"] in expected, (firing, memory)
    assert small.name in expected
