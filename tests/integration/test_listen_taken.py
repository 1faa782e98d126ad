"""A listen address another process holds: one line that names the address, who holds it (when it can
be seen) and the usual suspect on :9177, Debian's prometheus-libvirt-exporter; exit 2."""

from __future__ import annotations

import subprocess
import sys

import pytest

from .test_core_cli import NO_LIBVIRTD, assert_usage_error, run_exporter

pytestmark = pytest.mark.timeout(60, func_only=True)

HOLDER = ("import socket, sys, time\n"
          "s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(1)\n"
          "print(s.getsockname()[1], flush=True)\n"
          "time.sleep(60)\n")


def test_port_held_by_another_process_names_it_and_exits_2():
    holder = subprocess.Popen([sys.executable, "-c", HOLDER], stdout=subprocess.PIPE, text=True)
    try:
        port = int(holder.stdout.readline())
        address = "127.0.0.1:%d" % port
        p = run_exporter(["--web.listen-address", address, "--libvirt.uri", NO_LIBVIRTD])
    finally:
        holder.kill()
        holder.wait(10)
    assert_usage_error(p, address, "already in use", "pid %d (" % holder.pid,
                       "prometheus-libvirt-exporter", "--web.listen-address")

