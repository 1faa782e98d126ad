"""Fixtures of the packaging tests: the wheel and sdist built once per session, and an installed
copy of the wheel in a fresh virtualenv (what an operator gets from `pip install`)."""

from __future__ import annotations

import dataclasses
import os
import pwd
import shlex
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path
from typing import Dict, Iterator, List, Optional

import pytest

from scrape import Samples

REPO = Path(__file__).resolve().parents[2]
# Debian's interpreter, as scripts/setup.sh uses: the one an operator's host has.
SYSTEM_PYTHON = "/usr/bin/python3"
BUILD_TIMEOUT_S = 600


@dataclasses.dataclass
class Dist:
    wheel: Path
    sdist: Path


def run(argv, timeout_s: float = BUILD_TIMEOUT_S, **kw) -> subprocess.CompletedProcess:
    """Run a command; a failure shows its output."""
    p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, **kw)
    assert p.returncode == 0, "%s failed (%d):\n%s\n%s" % (argv, p.returncode, p.stdout[-3000:], p.stderr[-3000:])
    return p


@pytest.fixture(scope="session")
def dist(tmp_path_factory) -> Dist:
    out = tmp_path_factory.mktemp("dist")
    run([sys.executable, "-m", "build", "--outdir", str(out), str(REPO)])
    wheels, sdists = list(out.glob("*.whl")), list(out.glob("*.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1, list(out.iterdir())
    return Dist(wheels[0], sdists[0])


def install_into(prefix: Path, wheel: Path) -> Path:
    """A fresh virtualenv at ``prefix`` (Debian's python3) with the wheel installed; its bin dir."""
    run([SYSTEM_PYTHON, "-m", "venv", str(prefix)])
    run([str(prefix / "bin" / "pip"), "install", "-q", str(wheel)])
    return prefix / "bin"


@pytest.fixture(scope="session")
def world_readable_dir() -> Iterator[Path]:
    """A directory other users can read (pytest's tmp_path is root's only): for what the unit's
    unprivileged user must run."""
    d = Path(tempfile.mkdtemp(prefix="virt-exporter-pkg-", dir="/var/tmp"))
    os.chmod(d, 0o755)
    try:
        yield d
    finally:
        subprocess.run(["rm", "-rf", str(d)], check=False)


def ensure_unit_user() -> None:
    """The pip route's unit user, as the README makes it (idempotent): in no group but its own, since
    the unit runs read-only (a membership an earlier set-up gave it is taken back)."""
    try:
        user = pwd.getpwnam("virt-exporter")
    except KeyError:
        run(["useradd", "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent",
             "--shell", "/usr/sbin/nologin", "virt-exporter"], timeout_s=60)
        return
    if os.getgrouplist(user.pw_name, user.pw_gid) != [user.pw_gid]:
        run(["usermod", "--groups", "", user.pw_name], timeout_s=60)


def unit_service(unit: Path) -> Dict[str, List[str]]:
    """A unit file's [Service] section: key -> every value given, in order (keys may repeat)."""
    values: Dict[str, List[str]] = {}
    text = unit.read_text()
    section = text[text.index("[Service]"):].split("\n[", 1)[0]
    for line in section.splitlines()[1:]:
        key, sep, value = line.partition("=")
        if sep and not line.startswith(("#", ";")):
            values.setdefault(key.strip(), []).append(value.strip())
    return values


def read_environment_file(path: Path) -> Dict[str, str]:
    env = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            env[key] = shlex.split(value)[0] if value else ""
    return env


def exec_start_argv(service: Dict[str, List[str]], environment: Dict[str, str]) -> List[str]:
    """The unit's ExecStart, with $VAR expanded as systemd does (split on white space)."""
    argv: List[str] = []
    for word in shlex.split(service["ExecStart"][-1]):
        if word.startswith("$") and word[1:] in environment:
            argv += environment[word[1:]].split()
        else:
            argv.append(word)
    return argv


def security_exposure(unit: Path) -> float:
    """`systemd-analyze security --offline=true`'s overall exposure of a unit file (0 best, 10 worst)."""
    out = run(["systemd-analyze", "security", "--offline=true", "--no-pager", str(unit)], timeout_s=120).stdout
    line = next(line for line in out.splitlines() if "Overall exposure level" in line)
    return float(line.split(":")[1].split()[0])


def scrape_when_up(port: int) -> Optional[Samples]:
    """The exporter's samples at 127.0.0.1:port once it answers with libvirt_up 1, else None."""
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=10) as r:
            samples = Samples.parse(r.read().decode())
    except OSError:
        return None
    return samples if samples.get("libvirt_up") == 1 else None


HEALTHCHECK = REPO / "contrib/container/healthcheck.py"


def secured_web_config(directory: Path) -> Path:
    """A web config that turns TLS (a self-signed pair) and basic auth on, in ``directory`` (files
    readable by every user: the container's too). Its path."""
    import bcrypt  # the test virtualenv's; the exporter only checks the hash

    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / "server.pem", directory / "server.key"
    run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-days", "1", "-subj", "/CN=hypervisor.test", "-keyout", str(key), "-out", str(cert)], timeout_s=60)
    hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4)).decode()
    config = directory / "web.yml"
    config.write_text("tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n"
                      "basic_auth_users:\n  prometheus: '%s'\n" % hashed)
    for path in (directory, cert, key, config):
        os.chmod(path, 0o755 if path.is_dir() else 0o644)
    return config
