"""The tests' one wrapper for a server they start (the exporter, Prometheus, Alertmanager, Debian's Go
exporter): output to a log file, started when it answers (an HTTP URL with 200, or a check of its
own), stopped by its own pid (never by name)."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence

from bounds import wait_for

# What a server that is not listening yet answers a readiness check with.
NOT_YET = (urllib.error.URLError, ConnectionError, socket.timeout, ssl.SSLError)


def answers_200(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as r:
        return r.status == 200


class Process:
    """A child process with its output in a log file; ready when ``ready_url`` answers 200 (or
    ``ready()`` says so); stopped by its own pid."""

    def __init__(self, name: str, argv: Sequence[str], log_path: Path, ready_url: Optional[str] = None, *,
                 ready: Optional[Callable[[], bool]] = None, env: Optional[Mapping[str, str]] = None,
                 cwd: Optional[Path] = None) -> None:
        if (ready_url is None) == (ready is None):
            raise ValueError("give one of ready_url and ready")
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.ready_url = ready_url
        self.ready: Callable[[], bool] = ready or (lambda: answers_200(ready_url or ""))
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.proc: Optional[subprocess.Popen] = None

    def start(self, timeout_s: float = 30.0) -> "Process":
        """Start it and wait until it answers; a child that exits or never answers is stopped and
        raises RuntimeError with its log."""
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env=self.env, cwd=self.cwd)
        try:
            wait_for(self._answers, timeout_s, "%s to answer" % self.name, 0.1)
        except (AssertionError, RuntimeError) as e:
            self.stop()
            raise RuntimeError("%s: %s\n%s" % (self.name, e, self.log_tail())) from None
        return self

    def _answers(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError("exited %s" % self.proc.returncode)
        try:
            return self.ready()
        except NOT_YET:
            return False

    def stop(self, timeout_s: float = 15.0) -> Optional[int]:
        """SIGTERM, then SIGKILL after ``timeout_s``; its exit code (None if never started)."""
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        return proc.returncode

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, chars: int = 4000) -> str:
        return self.log()[-chars:]
