"""The real libvirt + KVM test bed, as a library for tests (and the CLI behind scripts/testbed.sh).

It talks to libvirtd only through `virsh` (standard library only, no libvirt-python), so what
tests compare the exporter against is an independent reference, and so that Debian's
/usr/bin/python3 can run it without the virtualenv.

Guests made by a `Testbed` are named `vet-<pid>-<kind>-<n>` after the pytest process that owns
them; each has its own directory under IMAGE_DIR with its disks, and an owner file records the
process's start time, so `gc` can tell a dead owner from a reused pid and several pytest runs on
one host never touch each other's guests.

    python3 tests/testbed.py demo-up | demo-down | gc | status
"""

from __future__ import annotations

import atexit
import concurrent.futures
import dataclasses
import importlib.util
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional, Union
from xml.sax.saxutils import escape

URI = "qemu:///system"
REPO = Path(__file__).resolve().parents[1]
IMAGE_DIR = Path(os.environ.get("VET_TESTBED_DIR", "/var/lib/virt-exporter-testbed"))
OWNERS_DIR = IMAGE_DIR / "owners"
PREFIX = "vet-"
KINDS = ("busy", "idle", "blank", "writer", "filler", "dirtier")
DEMO_GUESTS = {
    # name: (kind, vcpus, tap device)
    "demo-busy": ("busy", 1, "vtdemobusy"),
    "demo-idle": ("idle", 1, "vtdemoidle"),
    "demo-blank": ("blank", 2, "vtdemoblank"),
}
_NAME_RE = re.compile(r"^vet-(\d+)-")

_spec = importlib.util.spec_from_file_location("vet_bootsector",
                                               REPO / "scripts/guests/bootsector.py")
bootsector = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bootsector)


class TestbedError(RuntimeError):
    pass


# --------------------------------------------------------------------------------------------
# virsh


def _run(argv: list[str], check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    deadline = time.monotonic() + 20
    while True:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        # While libvirtd restarts (tests of reconnects do that) virsh cannot connect at all and
        # did nothing: retry those for a while, never a command that reached the daemon.
        if (argv[0] != "virsh" or p.returncode == 0
                or "failed to connect to the hypervisor" not in p.stderr
                or time.monotonic() > deadline):
            break
        time.sleep(0.5)
    if check and p.returncode != 0:
        raise TestbedError(f"{' '.join(argv)} failed ({p.returncode}): {p.stderr.strip()}")
    return p


def virsh(*args: str, check: bool = True, timeout: float = 120) -> str:
    """stdout of `virsh -c qemu:///system ARGS`; raises TestbedError on failure when check."""
    return _run(["virsh", "-q", "-c", URI, *args], check=check, timeout=timeout).stdout


_GROUP_FLAGS = {
    "state": "--state",
    "cpu": "--cpu-total",
    "cpu-total": "--cpu-total",
    "balloon": "--balloon",
    "vcpu": "--vcpu",
    "interface": "--interface",
    "net": "--interface",
    "block": "--block",
    "perf": "--perf",
    "iothread": "--iothread",
    "memory": "--memory",
    "dirtyrate": "--dirtyrate",
}


def _parse_value(v: str) -> Union[str, int, float]:
    try:
        return int(v)
    except ValueError:
        pass
    try:
        return float(v)
    except ValueError:
        return v


def parse_domstats(text: str) -> dict[str, dict[str, Union[str, int, float]]]:
    """{domain name: {key: value}} from `virsh domstats --raw` output."""
    out: dict[str, dict] = {}
    current = None
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        m = re.match(r"^Domain: '(.*)'$", line)
        if m:
            current = out.setdefault(m.group(1), {})
            continue
        if current is None or "=" not in line:
            raise TestbedError(f"unexpected domstats line: {line!r}")
        key, _, value = line.partition("=")
        current[key] = _parse_value(value)
    return out


def virsh_domstats(name: str, *groups: str,
                   backing: bool = False) -> dict[str, Union[str, int, float]]:
    """`virsh domstats --raw` for one domain as {key: int|float|str}; no groups means all.

    Group names as in the libvirt stats keys ('cpu', 'balloon', 'vcpu', 'net', 'block', ...).
    """
    flags = []
    for g in groups:
        if g not in _GROUP_FLAGS:
            raise ValueError(f"unknown stats group {g!r}")
        flags.append(_GROUP_FLAGS[g])
    if backing:
        flags.append("--backing")
    stats = parse_domstats(virsh("domstats", "--raw", *flags, name))
    if name not in stats:
        raise TestbedError(f"domstats returned no record for {name}")
    return stats[name]


def domain_names() -> list[str]:
    """All domains libvirt knows (running or defined)."""
    return [n for n in virsh("list", "--all", "--name").split() if n]


def domain_exists(name: str) -> bool:
    return _run(["virsh", "-q", "-c", URI, "domuuid", name], check=False).returncode == 0


def domain_active(name: str) -> bool:
    p = _run(["virsh", "-q", "-c", URI, "domstate", name], check=False)
    return p.returncode == 0 and p.stdout.strip() in ("running", "paused", "in shutdown", "blocked")


def ensure_daemon() -> str:
    """Start libvirtd if needed (scripts/testbed.sh daemon); returns URI."""
    _run(["bash", str(REPO / "scripts/testbed.sh"), "daemon"], timeout=900)
    return URI


# --------------------------------------------------------------------------------------------
# guests


def kvm_usable() -> bool:
    try:
        fd = os.open("/dev/kvm", os.O_RDWR)
    except OSError:
        return False
    os.close(fd)
    return True


_warned_tcg = False


def domain_type() -> str:
    """'kvm' when /dev/kvm is usable, else 'qemu' (TCG) with a warning on stderr, once."""
    global _warned_tcg
    if kvm_usable():
        return "kvm"
    if not _warned_tcg:
        print("testbed: WARNING: /dev/kvm is not usable, guests run under TCG (slow, CPU "
              "figures differ)", file=sys.stderr)
        _warned_tcg = True
    return "qemu"


@dataclasses.dataclass(frozen=True)
class WriterParams:
    """What the writer guest does: one 512-byte write at start_lba, start_lba + stride, ... up
    to max_lba, wait_us microseconds apart, on a qcow2 of capacity_mib (guest size) that lives on
    a loop device of physical_mib (so libvirt's block.N.physical is the device size)."""

    start_lba: int = 2048
    stride: int = 128  # 128 sectors = one 64 KiB qcow2 cluster per write
    max_lba: int = 2048 + 128 * 31
    wait_us: int = 20_000
    capacity_mib: int = 1024
    physical_mib: int = 256
    # False: a qcow2 file instead (physical = file size). Either way libvirt's allocation is the
    # qcow2's *host* highest written offset: header, tables and one cluster per new cluster.
    block_device: bool = True

    @property
    def writes(self) -> int:
        return bootsector.writer_write_count(self.start_lba, self.stride, self.max_lba)

    @property
    def last_lba(self) -> int:
        return self.start_lba + (self.writes - 1) * self.stride


def build_domain_xml(
    name: str,
    disk_path: str,
    vcpus: int = 1,
    memory_mib: int = 64,
    disk_is_block: bool = False,
    iothread: bool = True,
    tap: Optional[str] = None,
    numatune_nodeset: Optional[str] = None,
) -> str:
    """Domain XML of a tiny test guest: one virtio qcow2 disk, an optional ethernet interface
    (host-visible tap, so net.* stats exist), virtio-scsi and USB controllers for hot-plugged
    disks and NICs, a balloon with stats, a null serial, no graphics."""
    iothreads = "<iothreads>1</iothreads>" if iothread else ""
    numatune = (f"<numatune><memory mode='strict' nodeset='{escape(numatune_nodeset)}'/></numatune>"
                if numatune_nodeset else "")
    drv_iothread = " iothread='1'" if iothread else ""
    if disk_is_block:
        disk = (f"<disk type='block' device='disk'><driver name='qemu' type='qcow2'{drv_iothread}/>"
                f"<source dev='{escape(disk_path)}'/><target dev='vda' bus='virtio'/></disk>")
    else:
        disk = (f"<disk type='file' device='disk'><driver name='qemu' type='qcow2'{drv_iothread}/>"
                f"<source file='{escape(disk_path)}'/><target dev='vda' bus='virtio'/></disk>")
    iface = ""
    if tap:
        # type='user' has no host-side device and so no net.* stats; ethernet + a managed tap does.
        iface = (f"<interface type='ethernet'><target dev='{escape(tap)}' managed='yes'/>"
                 f"<model type='virtio'/></interface>")
    return f"""<domain type='{domain_type()}'>
  <name>{escape(name)}</name>
  <memory unit='MiB'>{memory_mib}</memory>
  <vcpu placement='static'>{vcpus}</vcpu>
  {iothreads}
  {numatune}
  <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os>
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    {disk}
    <controller type='scsi' model='virtio-scsi'/>
    <controller type='usb' model='qemu-xhci'/>
    {iface}
    <serial type='null'/>
    <memballoon model='virtio'><stats period='5'/></memballoon>
  </devices>
</domain>
"""


def _write_boot_sector(image: str, kind: str, writer: Optional[WriterParams]) -> None:
    if kind == "blank":
        return
    params = {}
    if kind == "writer":
        w = writer or WriterParams()
        params = dict(start_lba=w.start_lba, stride=w.stride, max_lba=w.max_lba, wait_us=w.wait_us)
    with tempfile.NamedTemporaryFile(suffix=".bin") as f:
        f.write(bootsector.build(kind, **params))
        f.flush()
        # Written through the qcow2 layer before QEMU starts: this does not move the runtime
        # allocation libvirt reports (only guest writes do), but the guest boots from it.
        _run(["qemu-io", "-f", "qcow2", "-c", f"write -q -s {f.name} 0 512", image])


def _losetup(backing: Path) -> str:
    return _run(["losetup", "--find", "--show", str(backing)]).stdout.strip()


def _loop_devices() -> list[dict]:
    p = _run(["losetup", "--list", "--json", "--output", "NAME,BACK-FILE"], check=False)
    if p.returncode != 0 or not p.stdout.strip():
        return []
    return json.loads(p.stdout).get("loopdevices", [])


def _detach_loops_under(directory: Path) -> None:
    """Detach every loop device whose backing file lives in directory (even if deleted)."""
    prefix = str(directory) + "/"
    for dev in _loop_devices():
        back = dev.get("back-file") or ""
        if back.startswith(prefix):
            _run(["losetup", "--detach", dev["name"]], check=False)


def blockdev_size(dev: str) -> int:
    """Size in bytes of a block device (blockdev --getsize64)."""
    return int(_run(["blockdev", "--getsize64", dev]).stdout.strip())


class Guest:
    """One test guest and the files it owns (its directory under IMAGE_DIR)."""

    def __init__(self, name: str, kind: str, xml: str, directory: Path, persistent: bool,
                 disk_path: str, tap: Optional[str], loop_device: Optional[str] = None,
                 writer: Optional[WriterParams] = None):
        self.name = name
        self.kind = kind
        self.xml = xml
        self.directory = directory
        self.persistent = persistent
        self.disk_path = disk_path  # the image file, or the loop device for the writer
        self.disk_target = "vda"
        self.interface_dev = tap
        self.loop_device = loop_device
        self.writer = writer
        self.started_at: Optional[float] = None  # time.monotonic() of the last start
        self._hotplug = itertools.count(1)
        self._uuid: Optional[str] = None

    def __repr__(self) -> str:
        return f"Guest({self.name!r}, kind={self.kind!r})"

    @property
    def uuid(self) -> str:
        if self._uuid is None:
            self._uuid = virsh("domuuid", self.name).strip()
        return self._uuid

    @property
    def disks(self) -> dict[str, str]:
        """{target: source path} of the guest's boot disk."""
        return {self.disk_target: self.disk_path}

    @property
    def pid(self) -> int:
        """The QEMU process id, from libvirt's pid file."""
        return int(Path(f"/run/libvirt/qemu/{self.name}.pid").read_text().strip())

    def is_active(self) -> bool:
        return domain_active(self.name)

    def start(self) -> None:
        if self.persistent:
            virsh("start", self.name)
        else:
            with tempfile.NamedTemporaryFile("w", suffix=".xml") as f:
                f.write(self.xml)
                f.flush()
                virsh("create", f.name)
        self.started_at = time.monotonic()
        self._uuid = None

    def destroy(self) -> None:
        """Power off at once (no-op when not running)."""
        if domain_active(self.name):
            p = _run(["virsh", "-q", "-c", URI, "destroy", self.name], check=False)
            if p.returncode != 0 and domain_active(self.name):
                raise TestbedError(f"destroy {self.name}: {p.stderr.strip()}")

    def undefine(self) -> None:
        if domain_exists(self.name) and not domain_active(self.name):
            _run(["virsh", "-q", "-c", URI, "undefine", self.name], check=False)

    def remove(self) -> None:
        """Destroy, undefine, detach its loop device, delete its files. Idempotent."""
        self.destroy()
        self.undefine()
        if self.loop_device:
            _detach_loops_under(self.directory)
            self.loop_device = None
        shutil.rmtree(self.directory, ignore_errors=True)

    def wait_booted(self, timeout: float = 180.0) -> float:
        """Wait until SeaBIOS has read the boot sector (block.0.rd.reqs >= 1): from then on the
        guest runs our program. SeaBIOS costs ~5 s of vCPU time under this host's software KVM
        (real mode is emulated), more wall time on a loaded host; ~0.3 s under TCG.
        Returns the seconds waited."""
        t0 = time.monotonic()
        while True:
            stats = virsh_domstats(self.name, "block")
            if int(stats.get("block.0.rd.reqs", 0)) >= 1:
                return time.monotonic() - t0
            if time.monotonic() - t0 > timeout:
                raise TestbedError(f"{self.name} did not read its boot sector within {timeout} s")
            time.sleep(0.2)

    def domstats(self, *groups: str, backing: bool = False) -> dict:
        return virsh_domstats(self.name, *groups, backing=backing)

    # -- hot-plug -------------------------------------------------------------------------------

    def attach_disk(self, size_mib: int = 64, target: Optional[str] = None) -> str:
        """Hot-plug a new thin qcow2 as a SCSI disk (virtio-scsi: unplug needs no guest
        cooperation, unlike PCI devices, which wait for an OS that acks the ACPI eject).
        Returns the target name (sdX)."""
        n = next(self._hotplug)
        target = target or "sd" + "abcdefghijklmnopqrstuvwxyz"[n % 26]
        image = self.directory / f"hotplug-{n}.qcow2"
        _run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), f"{size_mib}M"])
        virsh("attach-disk", self.name, str(image), target, "--live", "--driver", "qemu",
              "--subdriver", "qcow2", "--targetbus", "scsi")
        return target

    def detach_disk(self, target: str) -> None:
        virsh("detach-disk", self.name, target, "--live")

    def attach_interface(self, tap: Optional[str] = None,
                         model: str = "usb-net") -> tuple[str, str]:
        """Hot-plug an ethernet interface with a managed tap; returns (tap, mac).

        usb-net by default because USB unplug completes at once; a PCI NIC (model='virtio')
        plugs fine but its unplug waits for an OS to ack the ACPI eject, so with no guest OS
        detach returns after libvirt's 5 s wait with the NIC still there."""
        n = next(self._hotplug)
        tap = tap or _tap_name(f"h{n}", self.name)
        mac = "52:54:00:%02x:%02x:%02x" % tuple(os.urandom(3))
        # `virsh attach-interface --type ethernet` insists on a --source; the XML needs none.
        xml = (f"<interface type='ethernet'><mac address='{mac}'/>"
               f"<target dev='{tap}' managed='yes'/><model type='{model}'/></interface>")
        with tempfile.NamedTemporaryFile("w", suffix=".xml") as f:
            f.write(xml)
            f.flush()
            virsh("attach-device", self.name, f.name, "--live")
        return tap, mac

    def detach_interface(self, mac: str) -> None:
        virsh("detach-interface", self.name, "--type", "ethernet", "--mac", mac, "--live")

    def live_xml(self) -> str:
        return virsh("dumpxml", self.name)


def _tap_name(suffix: str, name: str) -> str:
    # Linux interface names are at most 15 characters.
    m = _NAME_RE.match(name)
    base = f"vt{m.group(1)}" if m else "vt"
    tap = f"{base}{suffix}"
    if len(tap) > 15:
        raise TestbedError(f"tap name {tap!r} too long")
    return tap


def create_guest(name: str, kind: str, directory: Path, vcpus: int = 1, memory_mib: int = 64,
                 start: bool = True, persistent: bool = True,
                 numatune_nodeset: Optional[str] = None, iothread: bool = True,
                 tap: Optional[str] = None, writer_params: Optional[WriterParams] = None,
                 disk_mib: int = 1024) -> Guest:
    """Make the disk in `directory` (which must exist and be owned by the caller), define and
    optionally start the guest. On failure everything made so far is removed."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}")
    if not persistent and not start:
        raise ValueError("a transient guest exists only while running: start=True")
    loop = None
    guest = None
    try:
        w = (writer_params or WriterParams()) if kind == "writer" else None
        if w and (w.last_lba + 1) * 512 > w.capacity_mib << 20:
            raise ValueError("the writer would write past the disk's capacity")
        if w and w.block_device:
            backing = directory / "physical.img"
            with open(backing, "wb") as f:
                f.truncate(w.physical_mib << 20)  # sparse
            loop = _losetup(backing)
            # qcow2 straight on the block device: physical = device size, as on an oVirt LV.
            _run(["qemu-img", "create", "-q", "-f", "qcow2", loop, f"{w.capacity_mib}M"])
            disk_path = loop
        else:
            disk_path = str(directory / "disk.qcow2")
            size_mib = w.capacity_mib if w else disk_mib
            _run(["qemu-img", "create", "-q", "-f", "qcow2", disk_path, f"{size_mib}M"])
        _write_boot_sector(disk_path, kind, w)
        xml = build_domain_xml(name, disk_path, vcpus=vcpus, memory_mib=memory_mib,
                               disk_is_block=loop is not None, iothread=iothread, tap=tap,
                               numatune_nodeset=numatune_nodeset)
        (directory / "domain.xml").write_text(xml)
        guest = Guest(name, kind, xml, directory, persistent, disk_path, tap, loop, w)
        if persistent:
            virsh("define", str(directory / "domain.xml"))
        if start:
            guest.start()
        return guest
    except BaseException:
        if guest is not None:
            guest.remove()
        else:
            if loop:
                _detach_loops_under(directory)
            shutil.rmtree(directory, ignore_errors=True)
        raise


# --------------------------------------------------------------------------------------------
# ownership: one owner file per test process, so gc can tell whose guests are stale


def _proc_start_time(pid: int) -> Optional[str]:
    """Field 22 of /proc/<pid>/stat (start time in clock ticks since boot), None if gone or a
    zombie (killed but not yet reaped by its parent)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # the command name may contain spaces and ')'
    if fields[0] in ("Z", "X"):
        return None
    return fields[19]


def owner_alive(pid: int) -> bool:
    """The process that named guests vet-<pid>-* still runs (and is the same process)."""
    started = _proc_start_time(pid)
    if started is None:
        return False
    try:
        recorded = (OWNERS_DIR / str(pid)).read_text().strip()
    except OSError:
        return True  # no owner file: trust the pid alone
    return recorded == started


_counter = itertools.count(1)
_live_beds: list["Testbed"] = []


def cleanup_all() -> None:
    """Remove the guests of every Testbed of this process still alive (session end, atexit)."""
    while _live_beds:
        try:
            _live_beds.pop().cleanup()
        except Exception as e:  # noqa: BLE001 - best effort at exit; gc catches the rest
            print(f"testbed: cleanup failed: {e}", file=sys.stderr)


atexit.register(cleanup_all)


class Testbed:
    """Makes guests named vet-<pid>-<kind>-<n> and removes exactly those on cleanup()."""

    def __init__(self):
        self.pid = os.getpid()
        self.prefix = f"{PREFIX}{self.pid}-"
        self.guests: list[Guest] = []
        OWNERS_DIR.mkdir(parents=True, exist_ok=True)
        (OWNERS_DIR / str(self.pid)).write_text(_proc_start_time(self.pid) + "\n")
        _live_beds.append(self)

    def _reserve(self, kind: str) -> tuple[str, int, Path]:
        # mkdir is atomic: a name is ours once its directory is, even if this module was
        # imported twice in one process (each copy has its own counter).
        while True:
            n = next(_counter)
            name = f"{self.prefix}{kind}-{n}"
            directory = IMAGE_DIR / name
            try:
                directory.mkdir(parents=True)
            except FileExistsError:
                continue
            if domain_exists(name):
                continue
            return name, n, directory

    def make_guest(self, kind: str = "idle", vcpus: int = 1, memory_mib: int = 64,
                   start: bool = True, persistent: bool = True,
                   numatune_nodeset: Optional[str] = None, iothread: bool = True,
                   interface: bool = True, writer_params: Optional[WriterParams] = None,
                   disk_mib: int = 1024) -> Guest:
        """A new guest of kind busy | idle | blank | writer (see module docs)."""
        name, n, directory = self._reserve(kind)
        tap = _tap_name(f"g{n}", name) if interface else None
        guest = create_guest(name, kind, directory, vcpus=vcpus, memory_mib=memory_mib,
                             start=start, persistent=persistent,
                             numatune_nodeset=numatune_nodeset, iothread=iothread, tap=tap,
                             writer_params=writer_params, disk_mib=disk_mib)
        self.guests.append(guest)
        return guest

    def cleanup(self) -> None:
        """Remove every guest this Testbed made; keeps going past failures, raises the first."""
        if self in _live_beds:
            _live_beds.remove(self)
        guests, self.guests = self.guests, []
        # QEMU takes ~2 s to exit after libvirt's SIGTERM here: stop them all at once.
        with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
            results = [pool.submit(g.remove) for g in guests]
        errors = [f.exception() for f in results if f.exception() is not None]
        if errors:
            raise errors[0]
        if not any(b.pid == self.pid for b in _live_beds):
            (OWNERS_DIR / str(self.pid)).unlink(missing_ok=True)


@dataclasses.dataclass
class StandardGuests:
    """The shared session guests: busy (1 vCPU spinning), idle (1 vCPU in hlt), blank (2 vCPUs
    left in firmware); each with a 1 GiB thin qcow2 + iothread, an ethernet tap, a balloon."""

    busy: Guest
    idle: Guest
    blank: Guest

    def __iter__(self):
        return iter((self.busy, self.idle, self.blank))


def make_standard_guests(bed: Testbed, wait: bool = True) -> StandardGuests:
    # busy last: once past its firmware it spins a core the others' firmware would want.
    idle = bed.make_guest("idle")
    blank = bed.make_guest("blank", vcpus=2)
    guests = StandardGuests(busy=bed.make_guest("busy"), idle=idle, blank=blank)
    if wait:
        for g in guests:
            g.wait_booted()
    return guests


def gc() -> list[str]:
    """Remove vet-<pid>-* guests, directories and loop devices whose owning process is gone.
    Returns the names removed. Guests of live owners (other pytest runs) are left alone."""
    removed = []
    dead: dict[int, bool] = {}

    def is_dead(pid: int) -> bool:
        if pid not in dead:
            dead[pid] = not owner_alive(pid)
        return dead[pid]

    for name in domain_names():
        m = _NAME_RE.match(name)
        if m and is_dead(int(m.group(1))):
            if domain_active(name):
                _run(["virsh", "-q", "-c", URI, "destroy", name], check=False)
            if domain_exists(name):
                _run(["virsh", "-q", "-c", URI, "undefine", name], check=False)
            removed.append(name)
    if IMAGE_DIR.is_dir():
        for d in IMAGE_DIR.iterdir():
            m = _NAME_RE.match(d.name)
            if m and d.is_dir() and is_dead(int(m.group(1))) and not domain_exists(d.name):
                _detach_loops_under(d)
                shutil.rmtree(d, ignore_errors=True)
                if d.name not in removed:
                    removed.append(d.name)
    if OWNERS_DIR.is_dir():
        for f in OWNERS_DIR.iterdir():
            if f.name.isdigit() and is_dead(int(f.name)):
                f.unlink(missing_ok=True)
    return removed


# --------------------------------------------------------------------------------------------
# the demo guests (scripts/testbed.sh up/down)


def demo_up() -> list[Guest]:
    """Define and start demo-busy, demo-idle, demo-blank; leaves running ones as they are."""
    out = []
    for name, (kind, vcpus, tap) in DEMO_GUESTS.items():
        directory = IMAGE_DIR / name
        if domain_exists(name):
            if not domain_active(name):
                virsh("start", name)
                print(f"{name}: started")
            else:
                print(f"{name}: running")
            continue
        shutil.rmtree(directory, ignore_errors=True)  # a half-made earlier attempt
        directory.mkdir(parents=True)
        out.append(create_guest(name, kind, directory, vcpus=vcpus, tap=tap))
        print(f"{name}: defined and started ({domain_type()})")
    return out


def demo_down() -> None:
    for name in DEMO_GUESTS:
        if domain_active(name):
            virsh("destroy", name)
        if domain_exists(name):
            virsh("undefine", name)
        shutil.rmtree(IMAGE_DIR / name, ignore_errors=True)
        print(f"{name}: removed")


def status() -> None:
    names = domain_names()
    demo = [n for n in names if n in DEMO_GUESTS]
    tests = [n for n in names if _NAME_RE.match(n)]
    for n in demo:
        print(f"{n}: {virsh('domstate', n).strip()}")
    owners: dict[str, list[str]] = {}
    for n in tests:
        owners.setdefault(_NAME_RE.match(n).group(1), []).append(n)
    for pid, ns in sorted(owners.items()):
        state = "alive" if owner_alive(int(pid)) else "dead (run gc)"
        print(f"test guests of pid {pid} ({state}): {len(ns)}")
    if not demo and not tests:
        print("no demo or test guests")


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in ("demo-up", "demo-down", "gc", "status"):
        print("usage: testbed.py demo-up|demo-down|gc|status", file=sys.stderr)
        return 2
    cmd = argv[0]
    if cmd == "demo-up":
        demo_up()
    elif cmd == "demo-down":
        demo_down()
    elif cmd == "gc":
        for n in gc():
            print(f"removed {n}")
    else:
        status()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
