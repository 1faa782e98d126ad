"""The container's health probe (contrib/container/healthcheck.py) against a real exporter process:
it reads the URL off the exporter's flags and web config, passes with TLS and basic auth on without
a password, and fails where nothing healthy answers. test_container.py runs it as podman's
HEALTHCHECK, finding the exporter on its own."""

from __future__ import annotations

import importlib.util
import socket
import ssl
import subprocess
import urllib.error
import urllib.request
from typing import Iterator

import pytest

from bounds import wait_for
from exporterproc import free_port

from .conftest import HEALTHCHECK, REPO, secured_web_config

pytestmark = [pytest.mark.timeout(120)]


def probe(url: str) -> subprocess.CompletedProcess:
    return subprocess.run(["/usr/bin/python3", str(HEALTHCHECK)], env={"VIRT_EXPORTER_HEALTH_URL": url},
                          capture_output=True, text=True, timeout=30)


def listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def load_probe():
    spec = importlib.util.spec_from_file_location("healthcheck", HEALTHCHECK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def secured_exporter(tmp_path) -> Iterator[int]:
    """The exporter's console script with TLS and basic auth on, the web config given relative to its
    working directory (libvirt's in-process test driver: no daemon needed). Yields its port and pid."""
    port = free_port()
    secured_web_config(tmp_path / "web")
    proc = subprocess.Popen([str(REPO / ".venv/bin/virt-exporter"), "--libvirt.uri", "test:///default",
                             "--web.listen-address=:%d" % port, "--web.config.file", "web/web.yml"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: listening(port), 30, "the exporter to listen")
        yield port, proc.pid
    finally:
        proc.terminate()
        proc.communicate(timeout=30)


def test_probe_finds_the_url_in_the_exporters_flags(secured_exporter):
    port, pid = secured_exporter
    probe_module = load_probe()
    assert probe_module.health_url(pid) == "https://127.0.0.1:%d/-/healthy" % port
    assert probe_module.flag(["--a", "1", "--a=2", "--b", "3"], "--a") == "2"


def test_probe_passes_with_tls_and_basic_auth_on(secured_exporter):
    port, _pid = secured_exporter
    # auth is really on: /-/healthy without credentials is the exporter's 401
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen("https://127.0.0.1:%d/-/healthy" % port, timeout=10,
                               context=ssl._create_unverified_context())
    assert refused.value.code == 401
    p = probe("https://127.0.0.1:%d/-/healthy" % port)
    assert p.returncode == 0, p.stdout + p.stderr


def test_probe_fails_where_nothing_healthy_answers(secured_exporter):
    # plain HTTP to the TLS listener: no answer the probe accepts
    p = probe("http://127.0.0.1:%d/-/healthy" % secured_exporter[0])
    assert p.returncode == 1 and p.stdout.startswith("unhealthy:"), p.stdout
    # nothing listening
    p = probe("http://127.0.0.1:%d/-/healthy" % free_port())
    assert p.returncode == 1 and "unhealthy:" in p.stdout, p.stdout
