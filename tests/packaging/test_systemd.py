"""contrib/systemd/virt-exporter.service: `systemd-analyze verify` accepts it (no running systemd
needed), it is hardened as promised, and its ExecStart line, run as its user with its environment
file's variables, serves the test bed's metrics."""

from __future__ import annotations

import configparser
import os
import pwd
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Dict, List

import pytest

import testbed as tb
from bounds import wait_for
from exporter import free_port

from .conftest import REPO, ensure_unit_user, install_into, scrape_when_up

UNIT = REPO / "contrib/systemd/virt-exporter.service"
DEFAULTS = REPO / "contrib/default/virt-exporter"
SYSTEMD_UNITS = Path("/lib/systemd/system")

pytestmark = [pytest.mark.packaging, pytest.mark.timeout(900)]


def unit_service() -> Dict[str, List[str]]:
    """The [Service] section: key -> every value given (keys may repeat)."""
    parser = configparser.RawConfigParser(strict=False, dict_type=_MultiDict, interpolation=None)
    parser.optionxform = str  # keep the keys' case
    parser.read_string(UNIT.read_text())
    return {k: v if isinstance(v, list) else [v] for k, v in parser["Service"].items()}


class _MultiDict(dict):
    """configparser that keeps repeated keys (systemd units repeat them) as lists."""

    def __setitem__(self, key, value):
        if isinstance(value, list) and key in self and isinstance(self[key], list):
            self[key].extend(value)
        else:
            super().__setitem__(key, value)


def verify(root: Path, unit_text: str, name: str) -> str:
    """systemd-analyze verify on ``unit_text`` installed under ``root``; its messages about it."""
    (root / "etc/systemd/system").mkdir(parents=True, exist_ok=True)
    (root / "etc/systemd/system" / name).write_text(unit_text)
    p = subprocess.run(["systemd-analyze", "verify", "--root=%s" % root, name],
                       capture_output=True, text=True, timeout=120)
    about_unit = [line for line in (p.stdout + p.stderr).splitlines() if name in line]
    return "rc=%d %s" % (p.returncode, "\n".join(about_unit)) if p.returncode or about_unit else ""


@pytest.fixture(scope="module")
def root(world_readable_dir, dist) -> Path:
    """A root tree as a host would have it: systemd's own units, the package in /opt/virt-exporter."""
    r = world_readable_dir / "root"
    (r / "lib/systemd").mkdir(parents=True)
    shutil.copytree(SYSTEMD_UNITS, r / "lib/systemd/system", symlinks=True)
    install_into(r / "opt/virt-exporter", dist.wheel)
    return r


def test_the_unit_verifies_and_a_broken_one_does_not(root):
    assert verify(root, UNIT.read_text(), "virt-exporter.service") == ""
    # the check can fail: a typo in a directive is reported
    broken = UNIT.read_text().replace("Type=simple", "Type=simpel")
    assert "simpel" in verify(root, broken, "virt-exporter-broken.service")


def test_the_unit_is_hardened():
    service = unit_service()
    want = {"Type": "simple", "User": "virt-exporter", "NoNewPrivileges": "yes", "ProtectSystem": "strict",
            "ProtectHome": "yes", "PrivateTmp": "yes", "CapabilityBoundingSet": "", "Restart": "on-failure",
            "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6", "SupplementaryGroups": "libvirt",
            "EnvironmentFile": "-/etc/default/virt-exporter"}
    assert {k: service.get(k, [None])[-1] for k in want} == want


def exec_start_argv(root: Path, environment: Dict[str, str]) -> List[str]:
    """The unit's ExecStart, with $VAR expanded as systemd does (split on white space), the binary
    looked up under ``root``."""
    line = unit_service()["ExecStart"][-1]
    argv: List[str] = []
    for word in shlex.split(line):
        if word.startswith("$") and word[1:] in environment:
            argv += environment[word[1:]].split()
        else:
            argv.append(word)
    assert argv[0] == "/opt/virt-exporter/bin/virt-exporter"
    return [str(root) + argv[0]] + argv[1:]


def read_environment_file(path: Path) -> Dict[str, str]:
    env = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            env[key] = shlex.split(value)[0] if value else ""
    return env


def test_exec_start_as_the_unit_user_serves_the_test_bed(root, standard_guests, tmp_path):
    ensure_unit_user()
    shipped = read_environment_file(DEFAULTS)
    assert shipped["ARGS"].startswith("--web.listen-address=")
    # the operator's copy of the file, on a free loopback port
    port = free_port()
    environment = dict(shipped, ARGS="--web.listen-address=127.0.0.1:%d --collector.numa.interval=1" % port)
    user = pwd.getpwnam("virt-exporter")
    proc = subprocess.Popen(exec_start_argv(root, environment), user=user.pw_uid, group=user.pw_gid,
                            extra_groups=os.getgrouplist("virt-exporter", user.pw_gid), cwd="/",
                            env={"PATH": "/usr/bin:/bin"}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        samples = wait_for(lambda: scrape_when_up(port), 30, "the exporter run as virt-exporter to reach libvirt")
        for guest in standard_guests:
            assert samples.get("libvirt_domain_state", domain=guest.name) == 1  # running, as virsh says
            assert tb.domain_active(guest.name)
        # numa_maps needs the QEMU user's rights: an unprivileged exporter says so instead (after
        # two failed reads in a row, --collector.numa.interval apart)
        wait_for(lambda: (scrape_when_up(port) or samples).get("libvirt_exporter_numa_readable",
                                                        reason="permission_denied") == 0,
                 20, "numa_readable to say permission_denied")
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out[-3000:]  # SIGTERM is a clean stop
