"""The real exporter as a child process on 127.0.0.1, and a free port for it — for integration tests."""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple

from childproc import Process
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
        self.process: Optional[Process] = None
        self.log_path: Optional[Path] = None
        self.ssl_context: Optional[ssl.SSLContext] = None  # set by a subclass that serves HTTPS

    @property
    def url(self) -> str:
        return "http://127.0.0.1:%d" % self.port

    @property
    def proc(self) -> Optional[subprocess.Popen]:
        return self.process.proc if self.process is not None else None

    def start(self) -> "ExporterProcess":
        fd, name = tempfile.mkstemp(prefix="virt-exporter-", suffix=".log")
        os.close(fd)
        self.log_path = Path(name)
        self.process = Process("exporter", self.command(), self.log_path, ready=self.ready, env=self.env,
                               cwd=REPO)
        self.process.start(self.ready_timeout_s)
        return self

    def command(self) -> List[str]:
        """The argv that runs the exporter (a subclass may run it elsewhere)."""
        return EXPORTER + self.args

    def ready(self) -> bool:
        """Whether the exporter is serving: /-/healthy answers 200."""
        return self.get("/-/healthy", timeout_s=2)[0] == 200

    def stop(self) -> int:
        return (self.process.stop() if self.process is not None else None) or 0

    def log(self) -> str:
        return self.process.log() if self.process is not None else ""

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

