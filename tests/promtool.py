"""Running promtool, Prometheus's own checker, as every test that validates rules or output does."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Optional, Union

PROMTOOL_TIMEOUT_S = 60


def promtool_path() -> str:
    path = shutil.which("promtool")
    assert path, "promtool not found: scripts/setup.sh installs it (Debian package prometheus)"
    return path


def promtool(*args: Union[str, Path], stdin: Optional[str] = None) -> subprocess.CompletedProcess:
    """``promtool <args>``, asserting it succeeded (its output in the failure message)."""
    p = subprocess.run([promtool_path(), *map(str, args)], input=stdin, capture_output=True, text=True,
                       timeout=PROMTOOL_TIMEOUT_S)
    assert p.returncode == 0, "promtool %s (rc %d):\n%s%s" % (
        " ".join(map(str, args)), p.returncode, p.stdout, p.stderr)
    return p


def check_metrics(text: str) -> None:
    """``promtool check metrics`` on an exposition: it must pass without a single remark."""
    p = promtool("check", "metrics", stdin=text)
    assert not (p.stdout + p.stderr).strip(), "promtool check metrics:\n%s%s" % (p.stdout, p.stderr)
