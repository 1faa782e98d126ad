"""The real exporter as a child process on 127.0.0.1, and a free port for it — for integration tests."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Dict, Iterable, Optional, Tuple

from scrape import Samples

REPO = Path(__file__).resolve().parents[1]
EXPORTER = [sys.executable, "-m", "virt_exporter"]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ExporterProcess:
    """``with ExporterProcess(["--collector.x"]) as exp: exp.scrape()``. Kills only its own pid."""

    def __init__(self, args: Iterable[str] = (), port: Optional[int] = None, ready_timeout_s: float = 30.0,
                 env: Optional[Dict[str, str]] = None) -> None:
        self.port = port or free_port()
        self.args = ["--web.listen-address", "127.0.0.1:%d" % self.port, "--log.level", "debug"] + list(args)
        self.ready_timeout_s = ready_timeout_s
        self.env = dict(os.environ, **(env or {}))
        self.proc: Optional[subprocess.Popen] = None
        self.log_path: Optional[Path] = None
        self.ssl_context: Optional[ssl.SSLContext] = None  # set by a subclass that serves HTTPS

    @property
    def url(self) -> str:
        return "http://127.0.0.1:%d" % self.port

    def start(self) -> "ExporterProcess":
        import tempfile

        fd, name = tempfile.mkstemp(prefix="virt-exporter-", suffix=".log")
        self.log_path = Path(name)
        self.proc = subprocess.Popen(EXPORTER + self.args, stdout=fd, stderr=fd, cwd=str(REPO), env=self.env)
        os.close(fd)
        deadline = time.monotonic() + self.ready_timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("exporter exited %s: %s" % (self.proc.returncode, self.log()))
            try:
                if self.ready():
                    return self
            except (urllib.error.URLError, ConnectionError, socket.timeout, ssl.SSLError):
                pass
            time.sleep(0.1)
        log = self.log()
        self.stop()  # __exit__ never runs when __enter__ raises: do not leave it running
        raise RuntimeError("exporter not ready: " + log)

    def ready(self) -> bool:
        """Whether the exporter is serving: /-/healthy answers 200."""
        return self.get("/-/healthy", timeout_s=2)[0] == 200

    def stop(self) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""

    def __enter__(self) -> "ExporterProcess":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        if self.log_path is not None:
            self.log_path.unlink(missing_ok=True)

    def get(self, path: str = "/metrics", headers: Optional[Dict[str, str]] = None,
            timeout_s: float = 30.0) -> Tuple[int, Dict[str, str], bytes]:
        req = urllib.request.Request(self.url + path, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=timeout_s, context=self.ssl_context) as r:
                return r.status, dict(r.headers), r.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()

    def scrape_text(self, **kw: object) -> str:
        status, _headers, body = self.get(**kw)  # type: ignore[arg-type]
        assert status == 200, (status, body[:500])
        return body.decode()

    def scrape(self, **kw: object) -> Samples:
        return Samples.parse(self.scrape_text(**kw))

