"""The Debian package: `bash scripts/build-deb.sh` builds dist/prometheus-virt-exporter_<version>_all.deb
without leaving the repository dirty, lintian finds no error, `apt-get install ./dist/…deb` installs
it on Debian's own python3-libvirt, prometheus-client 0.16, bcrypt 3.2 ..., the installed unit's
ExecStart run as the package's user (read-only: no libvirt group) serves the test bed, and
`apt-get purge` leaves no file behind."""

from __future__ import annotations

import contextlib
import os
import pwd
import subprocess
from pathlib import Path
from typing import Iterator, Sequence, Set

import pytest

import testbed as tb
import virt_exporter
from bounds import wait_for
from exporterproc import free_port

from .conftest import (
    REPO,
    exec_start_argv,
    read_environment_file,
    run,
    scrape_when_up,
    security_exposure,
    unit_service,
)

PACKAGE = "prometheus-virt-exporter"
USER = PACKAGE
DEB = REPO / "dist" / ("%s_%s_all.deb" % (PACKAGE, virt_exporter.__version__))
UNIT = Path("/lib/systemd/system/%s.service" % PACKAGE)
DEFAULTS = Path("/etc/default/%s" % PACKAGE)
DEBIAN_DEPENDS = ["python3-libvirt", "python3-prometheus-client", "python3-lxml", "python3-psutil",
                  "python3-yaml", "python3-bcrypt"]
# What install and purge may touch; the rest of the machine (libvirt's state, other tests' files,
# logs) changes under other tests and is not the package's.
WATCHED = ["/etc", "/usr", "/opt", "/var/lib/dpkg/info", "/var/lib/systemd"]
UNWATCHED = ("/etc/libvirt/",)  # the test bed's guest definitions
APT = ["apt-get", "-y", "-q", "-o", "DPkg::Lock::Timeout=300"]

pytestmark = [pytest.mark.packaging, pytest.mark.libvirt, pytest.mark.timeout(900)]


def apt(*args: str) -> subprocess.CompletedProcess:
    return run([*APT, *args], env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))


def file_list() -> Set[str]:
    files = set()
    for top in WATCHED:
        for dirpath, dirnames, filenames in os.walk(top):
            files.update(p for p in (os.path.join(dirpath, n) for n in dirnames + filenames)
                         if not p.startswith(UNWATCHED))
    return files


@pytest.fixture(scope="module")
def deb() -> Path:
    status = run(["git", "status", "--porcelain", "--ignored=no"], cwd=REPO).stdout
    out = run(["bash", "scripts/build-deb.sh"], cwd=REPO).stdout
    assert out.strip().splitlines()[-1] == "dist/" + DEB.name
    assert run(["git", "status", "--porcelain", "--ignored=no"], cwd=REPO).stdout == status
    print("%s: %d bytes" % (DEB.name, DEB.stat().st_size))
    return DEB


def test_lintian_finds_no_error(deb):
    p = subprocess.run(["lintian", "--no-tag-display-limit", str(deb)], capture_output=True, text=True, timeout=600)
    tags = [line for line in p.stdout.splitlines() if line[:2] in ("E:", "W:")]
    assert tags == [], p.stdout
    fields = run(["dpkg-deb", "--field", str(deb), "Depends", "Architecture"]).stdout
    assert "Architecture: all" in fields
    for dep in DEBIAN_DEPENDS:
        assert dep in fields
    assert not any(word in fields for word in ("gcc", "python3-venv", "python3-pip"))


@pytest.fixture(scope="module")
def installed(deb) -> Iterator[Set[str]]:
    """The package installed with apt; yields the file list from before. Purged afterwards (the
    purge test checks it; this is only the safety net)."""
    apt("install", "--no-install-recommends", *DEBIAN_DEPENDS)  # before the snapshot: apt keeps them
    if subprocess.run(["dpkg-query", "-W", PACKAGE], capture_output=True).returncode == 0:
        apt("purge", PACKAGE)  # a leftover of an interrupted run
    before = file_list()
    apt("install", "--no-install-recommends", str(deb))
    try:
        yield before
    finally:
        subprocess.run([*APT, "purge", PACKAGE], capture_output=True, timeout=300,
                       env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))


def test_installed_layout_unit_and_man_page(installed):
    assert Path("/usr/bin/virt-exporter").exists()
    for shipped in ("alerts/cpu.rules.yml", "dashboards/virt-host.json", "contrib/prometheus/prometheus.yml",
                    "contrib/systemd/libvirt-write.conf", "contrib/systemd/numa-maps.conf"):
        assert (Path("/usr/share") / PACKAGE / shipped).is_file(), shipped
    assert DEFAULTS.read_text() == (REPO / "contrib/default/virt-exporter").read_text()
    assert str(DEFAULTS) in run(["dpkg-query", "--showformat=${Conffiles}", "-W", PACKAGE]).stdout
    # the man page the unit's Documentation= names: systemd-analyze verify checks it exists
    assert run(["man", "-w", "virt-exporter"]).stdout.strip() == "/usr/share/man/man1/virt-exporter.1.gz"
    p = subprocess.run(["systemd-analyze", "verify", str(UNIT)], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and PACKAGE not in p.stdout + p.stderr, p.stdout + p.stderr
    exposure = security_exposure(UNIT)
    print("installed unit: systemd-analyze security --offline=true %.1f" % exposure)
    assert exposure <= 2.0
    user = pwd.getpwnam(USER)
    assert user.pw_shell == "/usr/sbin/nologin" and user.pw_uid < 1000


@contextlib.contextmanager
def exec_start(port: int, capabilities: Sequence[str] = ()) -> Iterator[None]:
    """The installed unit's ExecStart, with the conffile's ARGS (on ``port``), as systemd would start
    it: the package's user and its groups (initgroups), no capability but ``capabilities``
    (ambient, as AmbientCapabilities= gives them)."""
    service = unit_service(UNIT)
    assert service["User"] == [USER] and "SupplementaryGroups" not in service
    assert service["EnvironmentFile"] == ["-" + str(DEFAULTS)]
    assert service["CapabilityBoundingSet"] == [""]
    shipped = DEFAULTS.read_text()
    # the operator edits the conffile: a free loopback port instead of :9177, NUMA read every second
    args = ["--web.listen-address=127.0.0.1:%d" % port, "--collector.numa.interval=1"]
    DEFAULTS.write_text(shipped.replace("--web.listen-address=:9177", " ".join(args)))
    argv = exec_start_argv(service, read_environment_file(DEFAULTS))
    assert argv == ["/usr/bin/virt-exporter", *args]
    sets = ",".join(["-all"] + ["+" + c.lower().replace("cap_", "") for c in capabilities])
    proc = subprocess.Popen(["setpriv", "--reuid=" + USER, "--regid=" + USER, "--init-groups",
                             "--inh-caps=" + sets, "--ambient-caps=" + sets, "--bounding-set=" + sets, *argv],
                            cwd="/", env={"PATH": "/usr/bin:/bin"}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        yield
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
        DEFAULTS.write_text(shipped)
    assert proc.returncode == 0, out[-3000:]  # SIGTERM is a clean stop


def test_exec_start_as_the_package_user_serves_the_test_bed(installed, standard_guests):
    user = pwd.getpwnam(USER)
    assert os.getgrouplist(USER, user.pw_gid) == [user.pw_gid]  # no libvirt group: read-only
    port = free_port()
    with exec_start(port):
        samples = wait_for(lambda: scrape_when_up(port), 60, "the packaged exporter to reach libvirt")
        listed = set(tb.virsh("list", "--name").split())
        for guest in standard_guests:
            assert guest.name in listed
            assert samples.get("libvirt_domain_state", domain=guest.name) == 1
            assert samples.get("libvirt_domain_memory_maximum_bytes", domain=guest.name) == \
                tb.virsh_domstats(guest.name, "balloon")["balloon.maximum"] * 1024
        # without the numa-maps drop-in the root-owned QEMUs' numa_maps stay closed, and it says so
        wait_for(lambda: (scrape_when_up(port) or samples).get("libvirt_exporter_numa_readable",
                                                        reason="permission_denied") == 0,
                 20, "numa_readable to say permission_denied")
    # Debian's interpreter and libraries served it, not the test virtualenv's
    assert "/usr/lib/python3/dist-packages/prometheus_client" in run(
        ["/usr/bin/python3", "-c", "import prometheus_client; print(prometheus_client.__file__)"]).stdout


def test_the_numa_maps_drop_in_makes_placement_readable(installed, standard_guests):
    """With the shipped drop-in's capability (and only it) the root-owned QEMUs' numa_maps are read."""
    drop_in = unit_service(Path("/usr/share") / PACKAGE / "contrib/systemd/numa-maps.conf")
    port = free_port()
    with exec_start(port, drop_in["AmbientCapabilities"]):
        def placement():
            s = scrape_when_up(port)
            read = s and all(s.series("libvirt_domain_numa_memory_bytes", domain=g.name) for g in standard_guests)
            return s if read else None

        samples = wait_for(placement, 30, "every guest's numa_maps read with the drop-in's capability")
        assert [v for _labels, v in samples.series("libvirt_exporter_numa_readable")] == [1]
        for guest in standard_guests:
            assert sum(v for _labels, v in samples.series("libvirt_domain_numa_memory_bytes", domain=guest.name)) > 0


def test_purge_leaves_no_file_behind(installed):
    # runs last in this module: purging is the end of the package's life
    apt("purge", PACKAGE)
    left = sorted(file_list() - installed)
    assert left == [], left
    gone = sorted(installed - file_list())
    assert gone == [], gone
    assert subprocess.run(["getent", "passwd", USER], capture_output=True).returncode == 2
    assert subprocess.run(["getent", "group", USER], capture_output=True).returncode == 2
