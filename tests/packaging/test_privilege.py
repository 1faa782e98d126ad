"""Which grant lets an unprivileged user read a root-owned QEMU's /proc/<pid>/numa_maps, measured on
the test bed's guests: the experiment contrib/systemd/numa-maps.conf records. The kernel opens
numa_maps only with "ptrace read" access to the process (not a file permission: the DAC
capabilities do not help). CAP_PERFMON gives that read access (Linux 5.8+) without PTRACE_ATTACH;
CAP_SYS_PTRACE gives attach too, i.e. control of every process."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Sequence

import pytest

from .conftest import REPO, unit_service

NOBODY = 65534
DROP_IN = REPO / "contrib/systemd/numa-maps.conf"
PTRACE_ATTACH, PTRACE_DETACH = 16, 17

pytestmark = [pytest.mark.libvirt, pytest.mark.timeout(300)]


def as_nobody_with(caps: Sequence[str], code: str) -> str:
    """Run python ``code`` as uid/gid 65534, no groups, exactly ``caps`` (e.g. "perfmon"); its output."""
    sets = ",".join(["-all"] + ["+" + c for c in caps])
    p = subprocess.run(["setpriv", "--reuid=%d" % NOBODY, "--regid=%d" % NOBODY, "--clear-groups",
                        "--inh-caps=" + sets, "--ambient-caps=" + sets, "--bounding-set=" + sets,
                        "/usr/bin/python3", "-c", code], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    return p.stdout.strip()


def read_numa_maps(pid: int, caps: Sequence[str]) -> str:
    return as_nobody_with(caps, "import sys\ntry:\n    open('/proc/%d/numa_maps').readline(); print('read')\n"
                                "except OSError as e:\n    print(e.__class__.__name__)" % pid)


def ptrace_attach(pid: int, caps: Sequence[str]) -> str:
    return as_nobody_with(caps, "import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n"
                                "if libc.ptrace(%d, %d, 0, 0) == 0:\n    os.waitpid(%d, 0); libc.ptrace(%d, %d, 0, 0)"
                                "; print('attached')\nelse:\n    print(os.strerror(ctypes.get_errno()))"
                          % (PTRACE_ATTACH, pid, pid, PTRACE_DETACH, pid))


@pytest.fixture(scope="module")
def qemu_pid(standard_guests) -> int:
    guest = list(standard_guests)[0]
    pid = guest.pid
    status = Path("/proc/%d/status" % pid).read_text()
    assert "qemu" in Path("/proc/%d/comm" % pid).read_text()
    uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
    if uid_line.split()[1] == str(NOBODY):
        pytest.skip("the test bed's QEMU runs as uid %d itself" % NOBODY)
    return pid


@pytest.mark.parametrize("caps", [(), ("dac_read_search",), ("dac_override",), ("dac_read_search", "dac_override")])
def test_no_capability_and_the_file_capabilities_cannot_read_it(qemu_pid, caps):
    assert read_numa_maps(qemu_pid, caps) == "PermissionError"


@pytest.mark.parametrize("caps", [("perfmon",), ("sys_ptrace",)])
def test_perfmon_or_sys_ptrace_can(qemu_pid, caps):
    assert read_numa_maps(qemu_pid, caps) == "read"


def test_perfmon_cannot_attach_where_sys_ptrace_can():
    """PTRACE_ATTACH to a root process of our own (not a guest's QEMU: attaching stops it)."""
    target = subprocess.Popen(["sleep", "60"])
    try:
        assert ptrace_attach(target.pid, ("perfmon",)) == "Operation not permitted"
        assert ptrace_attach(target.pid, ("sys_ptrace",)) == "attached"
    finally:
        target.kill()
        target.wait()


def test_the_drop_in_grants_perfmon_and_nothing_else():
    service = unit_service(DROP_IN)
    assert service == {"CapabilityBoundingSet": ["CAP_PERFMON"], "AmbientCapabilities": ["CAP_PERFMON"]}
