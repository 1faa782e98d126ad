"""The unit's SystemCallFilter= (@system-service without @privileged and @resources), applied with
libseccomp as systemd applies it, to the exporter serving the test bed (no running systemd here). It
serves everything. One call outside the list happens: libnuma (loaded with libvirt) probes
set_mempolicy at start-up; SystemCallErrorNumber=EPERM turns that into a harmless error, where
systemd's default action would kill the process (shown below)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Dict, Set

import pytest

from bounds import wait_for
from exporterproc import free_port

from .conftest import REPO, run, scrape_when_up, unit_service

UNIT = REPO / "contrib/systemd/virt-exporter.service"
LAUNCHER = Path(__file__).with_name("seccomp_exec.py")

pytestmark = [pytest.mark.packaging, pytest.mark.libvirt, pytest.mark.timeout(300)]


def syscall_groups() -> Dict[str, list]:
    groups: Dict[str, list] = {}
    current = None
    for line in run(["systemd-analyze", "syscall-filter", "--no-pager"]).stdout.splitlines():
        if line.startswith("@"):
            current = groups.setdefault(line.strip(), [])
        elif current is not None and line.startswith(" ") and line.strip() and not line.strip().startswith("#"):
            current.append(line.strip())
    return groups


def expand(groups: Dict[str, list], name: str) -> Set[str]:
    out: Set[str] = set()
    for item in groups[name]:
        out |= expand(groups, item) if item.startswith("@") else {item}
    return out


def unit_allow_list() -> Set[str]:
    """SystemCallFilter= lines in order: an allow list, then ~ lines taking groups out of it."""
    groups = syscall_groups()
    allowed: Set[str] = set()
    for value in unit_service(UNIT)["SystemCallFilter"]:
        deny = value.startswith("~")
        names: Set[str] = set()
        for item in value.lstrip("~").split():
            names |= expand(groups, item) if item.startswith("@") else {item}
        allowed = allowed - names if deny else allowed | names
    return allowed


@pytest.fixture(scope="module")
def allow_file(tmp_path_factory) -> Path:
    assert unit_service(UNIT)["SystemCallErrorNumber"] == ["EPERM"]
    allowed = unit_allow_list()
    assert {"openat", "connect", "accept4"} <= allowed and not {"set_mempolicy", "chown", "setrlimit"} & allowed
    # numa-maps.conf's CAP_PERFMON leaves the exporter no way to use it but reading /proc/<pid>
    assert not {"perf_event_open", "ptrace"} & allowed
    path = tmp_path_factory.mktemp("seccomp") / "allowed"
    path.write_text("\n".join(sorted(allowed)))
    return path


def exporter_under_filter(default: str, allow_file: Path, port: int) -> subprocess.Popen:
    """Debian's python3 with its packaged libraries (the .deb's runtime), the repository's code."""
    return subprocess.Popen(["/usr/bin/python3", str(LAUNCHER), default, str(allow_file), "--", "/usr/bin/python3",
                             "-m", "virt_exporter", "--web.listen-address", "127.0.0.1:%d" % port,
                             "--collector.numa.interval", "1"],
                            cwd=str(REPO), env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_the_exporter_serves_the_test_bed_under_the_units_filter(allow_file, standard_guests):
    port = free_port()
    proc = exporter_under_filter("EPERM", allow_file, port)
    try:
        samples = wait_for(lambda: scrape_when_up(port), 60, "the exporter under the filter to reach libvirt")
        for guest in standard_guests:
            assert samples.get("libvirt_domain_state", domain=guest.name) == 1
        # NUMA placement (root reads numa_maps here) and the host's /proc too
        wait_for(lambda: all((scrape_when_up(port) or samples).series("libvirt_domain_numa_memory_bytes",
                                                                     domain=g.name) for g in standard_guests),
                 30, "numa placement under the filter")
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out[-3000:]  # and a clean stop


def test_without_the_error_number_the_filter_kills_it(allow_file):
    proc = exporter_under_filter("KILL", allow_file, free_port())
    try:
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -31, out[-2000:]  # SIGSYS
