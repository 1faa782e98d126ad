"""Host readings: CPU accounting (/proc/stat), network devices, MemAvailable and filesystem usage (psutil).

/proc/stat is read here rather than with psutil.cpu_times(percpu=True): psutil returns the per-CPU
lines as a list by position, so with a CPU offline the numbers shift (perfmon's ``cpuN`` must name
the real CPU), and it converts jiffies to float seconds where Neat's formula counts jiffies.
``read_proc_stat`` takes ``root`` so tests can point it at a fixture tree.

Also the CPU model (/proc/cpuinfo, see ``host_cpu_model``) and who holds a TCP port (for the
start-up message when the listen address is taken).
"""

from __future__ import annotations

import os
from typing import Dict, Optional

import psutil
from lxml import etree

from ..sample import CpuTimes, HostCpu, NetDevCounters


def _path(root: str, *parts: str) -> str:
    return os.path.join(root, *parts)


def parse_proc_stat(text: str) -> HostCpu:
    """The aggregate ``cpu`` line and the ``cpuN`` lines of /proc/stat, first seven columns each."""
    aggregate = None
    per_cpu: Dict[int, CpuTimes] = {}
    for line in text.splitlines():
        if not line.startswith("cpu"):
            # The cpu lines come first; stop at the first other line.
            if aggregate is not None:
                break
            continue
        fields = line.split()
        columns = [int(v) for v in fields[1:8]]
        columns += [0] * (7 - len(columns))  # very old kernels have fewer columns
        times = CpuTimes(*columns)
        label = fields[0]
        if label == "cpu":
            aggregate = times
        else:
            per_cpu[int(label[3:])] = times
    if aggregate is None:
        raise ValueError("no aggregate cpu line in /proc/stat")
    return HostCpu(aggregate, per_cpu)


def read_proc_stat(root: str = "/") -> HostCpu:
    with open(_path(root, "proc/stat"), "rb") as f:
        return parse_proc_stat(f.read().decode("ascii", "replace"))


def parse_cpuinfo_model(text: str) -> Optional[str]:
    """The first ``model name`` of /proc/cpuinfo, None when there is none (most non-x86 kernels)."""
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == "model name" and value.strip():
            return " ".join(value.split())
    return None


def _capabilities_cpu_model(capabilities_xml: str) -> Optional[str]:
    parser = etree.XMLParser(resolve_entities=False, no_network=True)
    model = etree.fromstring(capabilities_xml.encode("utf-8"), parser).findtext("host/cpu/model")
    return model.strip() if model and model.strip() else None


def host_cpu_model(capabilities_xml: str, arch: str, root: str = "/") -> str:
    """The CPU model for ``libvirt_host_info{cpu_model}``.

    /proc/cpuinfo's ``model name`` first: it is the processor's own brand string (CPUID), what
    lscpu and node_exporter's ``node_cpu_info{model_name}`` show, so the two join. libvirt's
    ``<host><cpu><model>`` is instead the nearest entry of libvirt's CPU map, a guest-CPU
    vocabulary (an AMD EPYC may read "kvm64", a Xeon "Skylake-Server-IBRS") that changes with
    libvirt's version; it is the fallback where the kernel reports no model name, and the
    architecture (what virNodeGetInfo calls the model) the last resort.
    """
    try:
        with open(_path(root, "proc/cpuinfo"), "rb") as f:
            model = parse_cpuinfo_model(f.read().decode("utf-8", "replace"))
    except OSError:
        model = None
    return model or _capabilities_cpu_model(capabilities_xml) or arch


def read_qemu_pid(name: str, root: str = "/") -> Optional[int]:
    """The QEMU pid libvirt wrote for domain ``name``, or None when there is no readable pid file."""
    try:
        with open(_path(root, "run/libvirt/qemu", name + ".pid")) as f:
            text = f.read().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def tcp_listener(port: int) -> Optional[str]:
    """"pid N (comm)" of a process listening on TCP ``port``, for the start-up message when the port
    is taken; None when none is visible (another network namespace, or not root: other users'
    sockets have no pid)."""
    try:
        connections = psutil.net_connections(kind="tcp")
    except (psutil.Error, OSError):
        return None
    for c in connections:
        if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port and c.pid:
            try:
                return "pid %d (%s)" % (c.pid, psutil.Process(c.pid).name())
            except psutil.Error:
                return "pid %d" % c.pid
    return None


def read_net_dev() -> Dict[str, NetDevCounters]:
    """Every network device's counters (/proc/net/dev, through psutil)."""
    return {name: NetDevCounters(rx_bytes=c.bytes_recv, rx_packets=c.packets_recv,
                                 tx_bytes=c.bytes_sent, tx_packets=c.packets_sent)
            for name, c in psutil.net_io_counters(pernic=True, nowrap=False).items()}


def read_mem_available_bytes() -> int:
    """MemAvailable of /proc/meminfo (psutil's ``available``; psutil estimates it on kernels before 3.14,
    which lack the field): what can be allocated without swapping, page cache included."""
    return int(psutil.virtual_memory().available)


def fs_used_fraction(path: str) -> float:
    """Used share (0..1) of the filesystem holding ``path``, as df computes it (used / (used + avail)).
    psutil's own ``percent`` is rounded to one decimal: the fraction is computed from its fields."""
    usage = psutil.disk_usage(path)
    if usage.used + usage.free <= 0:
        return 0.0
    return usage.used / (usage.used + usage.free)
