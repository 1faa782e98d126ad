"""The second hypervisor seen from inside its container (scripts/hypervisor2.sh): commands run there,
and this repository's exporter running there, where it sees that host's /proc and /run as an exporter
installed on it would. Used by tests/migration and bench/bench_compare.py --hypervisor2."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path
from typing import List

from exporterproc import ExporterProcess

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "hypervisor2.sh"


def script(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout)


def run_inside(*argv: str, timeout: float = 60) -> str:
    """stdout of ``argv`` run inside the second hypervisor's container."""
    p = script("exec", *argv, timeout=timeout)
    if p.returncode != 0:
        raise AssertionError("inside hv2: %s failed: %s" % (" ".join(argv), p.stderr.strip()))
    return p.stdout


def share_block_device(path: str) -> None:
    """Make a block device made on the host after the container started (a loop device) exist inside
    it at the same path: a privileged container gets a copy of /dev taken when it starts."""
    st = os.stat(path)
    assert stat.S_ISBLK(st.st_mode), path
    run_inside("sh", "-c", 'test -b "$0" || mknod "$0" b "$1" "$2"', path, str(os.major(st.st_rdev)),
               str(os.minor(st.st_rdev)))


class InsideExporter(ExporterProcess):
    """This checkout's exporter inside the container, on 127.0.0.1:<port> (host network), reading its
    libvirtd over the unix socket. ``stop`` ends it there by its pid file; SIGTERM to the local
    ``podman exec`` alone may leave it running."""

    def command(self) -> List[str]:
        flags: List[str] = []
        args = iter(self.args)
        for arg in args:
            if arg == "--web.listen-address":
                next(args)  # the script gives the address from the port
            else:
                flags.append(arg)
        return ["bash", str(SCRIPT), "exporter", str(self.port), *flags]

    def stop(self) -> int:
        if self.proc is not None and self.proc.poll() is None:
            script("exporter-stop", str(self.port), timeout=30)
        return super().stop()
