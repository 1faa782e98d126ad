"""Bad flags of the fault and security features and bad web-config files (issue 8, "Done when"): one
clear line on stderr and exit 2, before anything listens — and a plain-text password in a web config
is never echoed.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import List

import bcrypt
import pytest

from exporterproc import EXPORTER, REPO, free_port

PLAIN_PASSWORD = "hunter2-plain-text"


def run(args: List[str], timeout_s: float = 20.0) -> subprocess.CompletedProcess:
    args = ["--web.listen-address", "127.0.0.1:%d" % free_port()] + args
    proc = subprocess.Popen(EXPORTER + args, cwd=str(REPO), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()  # our own child, by its pid
        out, err = proc.communicate()
        raise AssertionError("exporter %s did not refuse to start: %s" % (args, err[-2000:])) from None
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def assert_one_line_exit_2(p: subprocess.CompletedProcess, *mentions: str) -> str:
    lines = [line for line in p.stderr.splitlines() if line.strip()]
    assert p.returncode == 2, "exit %s, want 2: %s" % (p.returncode, p.stderr)
    assert len(lines) == 1 and "Traceback" not in p.stderr, "want one line:\n" + p.stderr
    assert lines[0].startswith("virt-exporter: error: "), lines[0]
    for m in mentions:
        assert m in lines[0], "%r does not mention %r" % (lines[0], m)
    return lines[0]


FLAGS = [
    ("timeout-zero", ["--libvirt.timeout", "0"], "--libvirt.timeout"),
    ("timeout-text", ["--libvirt.timeout", "soon"], "--libvirt.timeout"),
    ("timeout-nan", ["--libvirt.timeout", "nan"], "--libvirt.timeout"),
    ("min-interval-negative", ["--libvirt.min-interval", "-1"], "--libvirt.min-interval"),
    ("concurrency-negative", ["--libvirt.concurrency", "-2"], "--libvirt.concurrency"),
    ("max-requests-negative", ["--web.max-requests", "-1"], "--web.max-requests"),
    ("max-requests-text", ["--web.max-requests", "many"], "--web.max-requests"),
    ("web-config-no-value", ["--web.config.file"], "--web.config.file"),
    ("domain-include-bad-regex", ["--libvirt.domain-include", "vm-[0-9"], "--libvirt.domain-include"),
    ("domain-exclude-bad-regex", ["--libvirt.domain-exclude", "(test"], "--libvirt.domain-exclude"),
]


@pytest.mark.parametrize("case,args,mention", FLAGS, ids=[f[0] for f in FLAGS])
def test_bad_flag(case: str, args: List[str], mention: str) -> None:
    assert_one_line_exit_2(run(args), mention)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(d / "key.pem"),
                    "-out", str(d / "cert.pem"), "-days", "2", "-subj", "/CN=127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    return d


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "web-config.yml"
    path.write_text(text)
    return path


def test_missing_web_config_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yml"
    assert_one_line_exit_2(run(["--web.config.file", str(missing)]), str(missing), "no such file")


def test_web_config_with_a_missing_cert(tmp_path: Path, pki: Path) -> None:
    path = write(tmp_path, "tls_server_config:\n  cert_file: %s\n  key_file: %s\n"
                 % (tmp_path / "missing.pem", pki / "key.pem"))
    assert_one_line_exit_2(run(["--web.config.file", str(path)]), str(path), "missing.pem")


def test_web_config_with_bad_yaml(tmp_path: Path) -> None:
    path = write(tmp_path, "tls_server_config:\n  cert_file: [unclosed\n basic_auth_users: {\n")
    assert_one_line_exit_2(run(["--web.config.file", str(path)]), str(path))


def test_web_config_with_a_plain_text_password(tmp_path: Path) -> None:
    path = write(tmp_path, "basic_auth_users:\n  prometheus: %s\n" % PLAIN_PASSWORD)
    p = run(["--web.config.file", str(path)])
    line = assert_one_line_exit_2(p, str(path), "bcrypt")
    assert PLAIN_PASSWORD not in p.stderr + p.stdout, "the password was echoed: " + line


def test_web_config_that_is_a_directory(tmp_path: Path) -> None:
    assert_one_line_exit_2(run(["--web.config.file", str(tmp_path)]), str(tmp_path))


def test_good_web_config_starts(tmp_path: Path, pki: Path) -> None:
    """The counter-check: the same kind of file, right, is accepted (the exporter then runs; we stop it)."""
    hashed = bcrypt.hashpw(b"x", bcrypt.gensalt(rounds=4)).decode()
    path = write(tmp_path, "tls_server_config:\n  cert_file: %s\n  key_file: %s\nbasic_auth_users:\n  u: %s\n"
                 % (pki / "cert.pem", pki / "key.pem", hashed))
    port = free_port()
    proc = subprocess.Popen(EXPORTER + ["--web.listen-address", "127.0.0.1:%d" % port, "--web.config.file", str(path),
                                        "--libvirt.uri", "qemu:///system?socket=/nonexistent/sock"],
                            cwd=str(REPO), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(timeout=3.0)
    finally:
        proc.terminate()
        _out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
