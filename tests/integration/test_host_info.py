"""libvirt_host_info against the test bed: the CPU model is the one the host reports (/proc/cpuinfo,
read here by the test, and lscpu), not the architecture virNodeGetInfo calls its "model"; the versions
are the ones `virsh version` prints and the hostname is `virsh hostname`'s and the kernel's."""

from __future__ import annotations

import re
import socket
import subprocess

import pytest

import testbed as tb
from exporterproc import ExporterProcess

pytestmark = pytest.mark.libvirt


def cpuinfo_model_names() -> set:
    with open("/proc/cpuinfo") as f:
        return {" ".join(line.split(":", 1)[1].split()) for line in f if line.split(":")[0].strip() == "model name"}


def test_host_info_cpu_model_is_the_hosts_model_name(libvirtd):
    names = cpuinfo_model_names()
    if not names:
        pytest.skip("this kernel's /proc/cpuinfo has no 'model name' (not x86): libvirt's model is used")
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=30,
                           env={"LC_ALL": "C", "PATH": "/usr/bin:/bin"}).stdout
    lscpu_model = next(" ".join(line.split(":", 1)[1].split()) for line in lscpu.splitlines()
                       if line.startswith("Model name:"))
    arch = subprocess.run(["uname", "-m"], capture_output=True, text=True, timeout=30).stdout.strip()
    with ExporterProcess(["--libvirt.uri", libvirtd, "--libvirt.min-interval", "0"]) as exp:
        series = exp.scrape().series("libvirt_host_info")
    assert len(series) == 1, series
    labels, value = series[0]
    assert value == 1
    assert labels["cpu_model"] in names, (labels, names)
    assert labels["cpu_model"] == lscpu_model
    assert labels["cpu_model"] != arch


def test_host_info_versions_and_hostname_are_virshs(libvirtd):
    version = tb.virsh("version")
    # The daemon's version where virsh prints it (it talks to libvirtd), else the library's.
    daemon = re.search(r"Running against daemon: (\S+)", version) or re.search(r"Using library: libvirt (\S+)", version)
    hypervisor = re.search(r"Running hypervisor: \S+ (\S+)", version)
    assert daemon and hypervisor, version
    hostname = tb.virsh("hostname").strip()
    assert hostname == socket.gethostname()
    with ExporterProcess(["--libvirt.uri", libvirtd, "--libvirt.min-interval", "0"]) as exp:
        ((labels, value),) = exp.scrape().series("libvirt_host_info")
    assert value == 1
    got = {k: labels[k] for k in ("hostname", "libvirt_version", "hypervisor_version")}
    assert got == {"hostname": hostname, "libvirt_version": daemon.group(1),
                   "hypervisor_version": hypervisor.group(1)}, version
