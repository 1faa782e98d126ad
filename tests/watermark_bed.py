"""Test-bed helpers for the watermark tests: the in-process exporter, thin volumes that grow (a loop
device extended in place), backing chains on block devices, and the independent references (virsh,
qemu-img, blockdev, virt-admin)."""

from __future__ import annotations

import dataclasses
import json
import os
import re
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import inprocess
import scrape
import testbed as tb
from bounds import wait_for  # noqa: F401  (re-exported for the watermark tests)
from exporterproc import free_port  # noqa: F401  (re-exported for the watermark tests)

MIB = 1024 * 1024

Series = scrape.Series
value = scrape.value
# The App wires the watermark collector itself: read-write libvirt exactly when it arms thresholds,
# and the BlockEvents subsystem whose snapshot the collector reads.
running_exporter = inprocess.running_exporter


def series_of(series: Series, name: str, **where: str) -> Dict[Tuple[Tuple[str, str], ...], float]:
    """{labels: value} of ``name`` whose labels include ``where``."""
    return {labels: v for (n, labels), v in series.items()
            if n == name and all(dict(labels).get(k) == w for k, w in where.items())}


# --- storage --------------------------------------------------------------------------------------

def loop_backing_file(dev: str) -> Path:
    """The file behind a loop device (from losetup)."""
    out = tb.run(["losetup", "--list", "--json", "--output", "NAME,BACK-FILE", dev]).stdout
    return Path(json.loads(out)["loopdevices"][0]["back-file"].split(" (deleted)")[0])


def grow_loop_device(dev: str, size_bytes: int) -> None:
    """Extend a loop device in place, as lvextend extends an LV: the file grows, the kernel is told.
    libvirt reports the new physical size at once (measured)."""
    os.truncate(loop_backing_file(dev), size_bytes)
    tb.run(["losetup", "--set-capacity", dev])
    assert blockdev_size(dev) == size_bytes


def _run_here(*argv: str) -> str:
    return tb.run(list(argv)).stdout


@dataclasses.dataclass(frozen=True)
class Host:
    """Where the references are read: ``virsh`` gives stdout of `virsh ARGS` against that host's
    libvirtd, ``run`` stdout of a command on that host. This host by default; tests/migration reads the
    second hypervisor's from inside its container."""

    virsh: Callable[..., str] = tb.virsh
    run: Callable[..., str] = _run_here


HERE = Host()


def blockdev_size(dev: str, host: Host = HERE) -> int:
    return int(host.run("blockdev", "--getsize64", dev).strip())


def make_loop_device(directory: Path, name: str, size_bytes: int) -> str:
    """A sparse file in the guest's directory on a loop device (Guest.remove detaches it)."""
    backing = directory / name
    with open(backing, "wb") as f:
        f.truncate(size_bytes)
    return tb.run(["losetup", "--find", "--show", str(backing)]).stdout.strip()


def qemu_img_info(path: str, backing_chain: bool = False, host: Host = HERE) -> List[dict]:
    """`qemu-img info -U --output=json` (force-share: the image is open by a running QEMU)."""
    argv = ["qemu-img", "info", "-U", "--output=json"] + (["--backing-chain"] if backing_chain else []) + [path]
    out = json.loads(host.run(*argv))
    return out if isinstance(out, list) else [out]


def domblkinfo(name: str, target: str, host: Host = HERE) -> Dict[str, int]:
    """`virsh domblkinfo` → {"capacity", "allocation", "physical"}."""
    out = {}
    for line in host.virsh("domblkinfo", name, target).splitlines():
        key, _, val = line.partition(":")
        if val.strip():
            out[key.strip().lower()] = int(val.strip())
    return out


def layer_stats(name: str, host: Host = HERE) -> Dict[Tuple[str, Optional[str]], Dict[str, object]]:
    """`virsh domstats --block --backing` as {(target, backing_index label or None): {key: value}} with
    the metric label convention: the first entry of a name is the top layer (no label)."""
    stats = tb.parse_domstats(host.virsh("domstats", "--raw", "--block", "--backing", name))[name]
    out: Dict[Tuple[str, Optional[str]], Dict[str, object]] = {}
    seen = set()
    for i in range(int(stats["block.count"])):
        prefix = "block.%d." % i
        entry = {k[len(prefix):]: v for k, v in stats.items() if k.startswith(prefix)}
        target = str(entry["name"])
        label = None if target not in seen else str(entry.get("backingIndex"))
        seen.add(target)
        out[(target, label)] = entry
    return out


def libvirt_clients(pid: int) -> Dict[str, bool]:
    """{libvirtd client id: read-only?} of every connection process ``pid`` has open (virt-admin).

    Compare sets taken before and after starting an exporter: a connection of an earlier exporter in
    this process stays open until the last virDomain object that references it is collected."""
    admin = ["virt-admin", "-c", "libvirtd:///system"]
    listing = tb.run(admin + ["srv-clients-list", "libvirtd"]).stdout
    clients = {}
    for client_id in re.findall(r"^\s*(\d+)\s", listing, re.M):
        p = tb.run(admin + ["client-info", "libvirtd", client_id], check=False)
        if p.returncode != 0:
            continue  # gone meanwhile
        info = dict((k.strip(), v.strip()) for k, _, v in (line.partition(":") for line in p.stdout.splitlines()))
        if info.get("unix_process_id") == str(pid):
            clients[client_id] = info.get("readonly") == "yes"
    return clients


def suspend(guest) -> None:
    tb.virsh("suspend", guest.name)


def resume(guest) -> None:
    tb.virsh("resume", guest.name)


def state_reason(guest) -> Tuple[int, int]:
    s = tb.virsh_domstats(guest.name, "state")
    return int(s["state.state"]), int(s["state.reason"])


def allocation(guest) -> int:
    """block.0.allocation of a one-disk guest (virsh)."""
    return int(tb.virsh_domstats(guest.name, "block")["block.0.allocation"])


def make_writer(bed, params: "tb.WriterParams", cluster_size: str = "1M", start: bool = True):
    """A writer guest (tests/testbed.py) whose thin qcow2 on the loop device has bigger clusters: each
    write of the writer then allocates a whole cluster, so allocation grows by ``cluster_size`` per
    BIOS write (one write takes 50-150 ms on these hosts) instead of by 64 KiB."""
    guest = bed.make_guest("writer", writer_params=params, interface=False, start=False)
    tb.run(["qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=" + cluster_size, guest.disk_path,
             "%dM" % params.capacity_mib])
    tb.write_boot_sector(guest.disk_path, "writer", params)
    if start:
        guest.start()
    return guest


def scrape_until(exp: inprocess.InProcessExporter, what: str, pred: Callable[[Series], bool],
                 timeout_s: float, show: Optional[Callable[[Series], object]] = None) -> Series:
    """Scrape until ``pred(series)`` holds; returns that scrape. ``show(last scrape)`` goes into the
    failure message."""
    last: List[Series] = []

    def attempt() -> Optional[Series]:
        m = exp.scrape()
        last[:] = [m]
        return m if pred(m) else None

    try:
        return wait_for(attempt, timeout_s, what)
    except AssertionError as e:
        if show is None or not last:
            raise
        raise AssertionError("%s; last scrape: %r" % (e, show(last[0]))) from None
