"""What the guest agent says about a running guest: whether it answers, its OS and hostname, and its
filesystems' size and use (opt-in; read in the background by source/guest_agent.py).

Needs a read-write libvirt connection (the reader opens one of its own): libvirt refuses
virDomainGetGuestInfo on a read-only one. A guest whose agent does not answer costs no scrape time:
its calls are waited for only in the background, and it shows as libvirt_domain_guest_agent_up 0.
"""

from __future__ import annotations

from typing import Iterable, Set, Tuple

from prometheus_client.metrics_core import Metric

from ..metadata_labels import bounded
from .base import Background, Option, ScrapeContext, register
from .families import gauge, info

# Filesystems that hold no user data: the agent of a Linux guest reports only those on a block
# device, but other agents (and versions) report more.
PSEUDO_FSTYPES = frozenset({"proc", "sysfs", "devtmpfs", "devpts", "tmpfs", "ramfs", "rootfs", "cgroup", "cgroup2",
                            "securityfs", "debugfs", "tracefs", "pstore", "bpf", "mqueue", "hugetlbfs", "autofs",
                            "configfs", "fusectl", "binfmt_misc", "efivarfs", "squashfs", "overlay", "nsfs"})
OS_FIELDS = ("id", "name", "version-id", "kernel-release", "machine")


def seconds(text: str) -> float:
    """A number of seconds > 0 (argparse type)."""
    value = float(text)
    if not 0 < value < float("inf"):
        raise ValueError(text)
    return value


@register("guest_agent", default_enabled=False, background=Background.GUEST_AGENT, options=(
    Option("interval", seconds, 30.0, "seconds between two guest-agent reads of a domain"),
    Option("timeout", seconds, 2.0, "seconds a guest-agent call is waited for before the domain "
           "shows as down (the call is never waited for by a scrape)"),
), help="guest OS, hostname and filesystem use through qemu-guest-agent (needs a read-write connection)")
def collect(ctx: ScrapeContext) -> Iterable[Metric]:
    fs_labels = ["domain", "mountpoint", "fstype"]
    up = gauge("libvirt_domain_guest_agent_up",
               "1 when the guest agent answered the last call in time, 0 when it failed or did not answer.")
    size = gauge("libvirt_domain_guest_filesystem_size_bytes",
                 "Size of a guest filesystem as the guest agent reports it (used + available to users), bytes.",
                 fs_labels)
    used = gauge("libvirt_domain_guest_filesystem_used_bytes",
                 "Used bytes of a guest filesystem as the guest agent reports it.", fs_labels)
    os_info = info("libvirt_domain_guest_os_info", "The guest's OS and hostname from its agent (value 1).",
                   ["domain", "os_id", "os_name", "os_version_id", "kernel_release", "machine", "hostname"])
    snapshot = ctx.guest_agent
    if snapshot is not None:
        for uuid, dom in ctx.current.domains.items():
            reading = snapshot.domains.get(uuid)
            if reading is None or not dom.active:
                continue
            key = (dom.name,)
            up.add_metric(key, 1 if reading.up else 0)
            if not reading.up:
                continue
            os_info.add_metric([dom.name] + [bounded(reading.os.get(f, "")) for f in OS_FIELDS]
                               + [bounded(reading.hostname)], {})
            seen: Set[Tuple[str, ...]] = set()
            for fs in reading.filesystems:
                labels = (dom.name, bounded(fs.mountpoint), fs.fstype)
                # A filesystem mounted twice (bind mounts) is one filesystem: the first mountpoint.
                device = ("device", fs.name) if fs.name else labels
                if fs.fstype in PSEUDO_FSTYPES or labels in seen or device in seen:
                    continue
                seen.update((labels, device))
                if fs.total_bytes is not None:
                    size.add_metric(labels, fs.total_bytes)
                if fs.used_bytes is not None:
                    used.add_metric(labels, fs.used_bytes)
    yield from (up, size, used, os_info)
