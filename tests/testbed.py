"""The real libvirt + KVM test bed, as a library for tests (and for scripts/testbed_guests.py, the
guest commands of scripts/testbed.sh).

It talks to libvirtd only through `virsh` (standard library only, no libvirt-python), so what
tests compare the exporter against is an independent reference, and so that Debian's
/usr/bin/python3 can run it without the virtualenv.

Guests made by a `Testbed` are named `vet-<pid>-<kind>-<n>` after the pytest process that owns
them; each has its own directory under IMAGE_DIR with its disks, and an owner file records the
process's start time, so `gc` can tell a dead owner from a reused pid and several pytest runs on
one host never touch each other's guests.
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


def run(argv: list[str], check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
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
    return run(["virsh", "-q", "-c", URI, *args], check=check, timeout=timeout).stdout


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
    return run(["virsh", "-q", "-c", URI, "domuuid", name], check=False).returncode == 0


def domain_active(name: str) -> bool:
    p = run(["virsh", "-q", "-c", URI, "domstate", name], check=False)
    return p.returncode == 0 and p.stdout.strip() in ("running", "paused", "in shutdown", "blocked")


def ensure_daemon() -> str:
    """Start libvirtd if needed (scripts/testbed.sh daemon); returns URI."""
    run(["bash", str(REPO / "scripts/testbed.sh"), "daemon"], timeout=900)
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
    vcpus_current: Optional[int] = None,
    memory_mib: int = 64,
    disk_is_block: bool = False,
    iothread: bool = True,
    tap: Optional[str] = None,
    numatune_nodeset: Optional[str] = None,
    extra_devices: str = "",
) -> str:
    """Domain XML of a tiny test guest: one virtio qcow2 disk, an optional ethernet interface
    (host-visible tap, so net.* stats exist), virtio-scsi and USB controllers for hot-plugged
    disks and NICs, a balloon with stats, a null serial, no graphics; ``extra_devices`` (XML)
    goes inside <devices> as given."""
    iothreads = "<iothreads>1</iothreads>" if iothread else ""
    # Fewer vCPUs online than the maximum: current and maximum differ without a guest OS.
    current = f" current='{int(vcpus_current)}'" if vcpus_current is not None else ""
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
  <vcpu placement='static'{current}>{vcpus}</vcpu>
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
    {extra_devices}
    <serial type='null'/>
    <memballoon model='virtio'><stats period='5'/></memballoon>
  </devices>
</domain>
"""


def write_boot_sector(image: str, kind: str, writer: Optional[WriterParams]) -> None:
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
        run(["qemu-io", "-f", "qcow2", "-c", f"write -q -s {f.name} 0 512", image])


def _losetup(backing: Path) -> str:
    return run(["losetup", "--find", "--show", str(backing)]).stdout.strip()


def _loop_devices() -> list[dict]:
    p = run(["losetup", "--list", "--json", "--output", "NAME,BACK-FILE"], check=False)
    if p.returncode != 0 or not p.stdout.strip():
        return []
    return json.loads(p.stdout).get("loopdevices", [])


def _detach_loops_under(directory: Path) -> None:
    """Detach every loop device whose backing file lives in directory (even if deleted)."""
    prefix = str(directory) + "/"
    for dev in _loop_devices():
        back = dev.get("back-file") or ""
        if back.startswith(prefix):
            run(["losetup", "--detach", dev["name"]], check=False)


def blockdev_size(dev: str) -> int:
    """Size in bytes of a block device (blockdev --getsize64)."""
    return int(run(["blockdev", "--getsize64", dev]).stdout.strip())


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
            p = run(["virsh", "-q", "-c", URI, "destroy", self.name], check=False)
            if p.returncode != 0 and domain_active(self.name):
                raise TestbedError(f"destroy {self.name}: {p.stderr.strip()}")

    def undefine(self) -> None:
        if domain_exists(self.name) and not domain_active(self.name):
            run(["virsh", "-q", "-c", URI, "undefine", self.name], check=False)

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
        run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), f"{size_mib}M"])
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
                 vcpus_current: Optional[int] = None, start: bool = True, persistent: bool = True,
                 numatune_nodeset: Optional[str] = None, iothread: bool = True,
                 tap: Optional[str] = None, writer_params: Optional[WriterParams] = None,
                 disk_mib: int = 1024, extra_devices: str = "") -> Guest:
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
            run(["qemu-img", "create", "-q", "-f", "qcow2", loop, f"{w.capacity_mib}M"])
            disk_path = loop
        else:
            disk_path = str(directory / "disk.qcow2")
            size_mib = w.capacity_mib if w else disk_mib
            run(["qemu-img", "create", "-q", "-f", "qcow2", disk_path, f"{size_mib}M"])
        write_boot_sector(disk_path, kind, w)
        xml = build_domain_xml(name, disk_path, vcpus=vcpus, vcpus_current=vcpus_current, memory_mib=memory_mib,
                               disk_is_block=loop is not None, iothread=iothread, tap=tap,
                               numatune_nodeset=numatune_nodeset, extra_devices=extra_devices)
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


def owner_of(name: str) -> Optional[int]:
    """The pid of the test process that owns a guest or pool named vet-<pid>-*, None for other names."""
    m = _NAME_RE.match(name)
    return int(m.group(1)) if m else None


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
                   vcpus_current: Optional[int] = None, start: bool = True, persistent: bool = True,
                   numatune_nodeset: Optional[str] = None, iothread: bool = True,
                   interface: bool = True, writer_params: Optional[WriterParams] = None,
                   disk_mib: int = 1024, extra_devices: str = "") -> Guest:
        """A new guest of kind busy | idle | blank | writer (see module docs)."""
        name, n, directory = self._reserve(kind)
        tap = _tap_name(f"g{n}", name) if interface else None
        guest = create_guest(name, kind, directory, vcpus=vcpus, memory_mib=memory_mib,
                             vcpus_current=vcpus_current, start=start, persistent=persistent,
                             numatune_nodeset=numatune_nodeset, iothread=iothread, tap=tap,
                             writer_params=writer_params, disk_mib=disk_mib, extra_devices=extra_devices)
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


# --------------------------------------------------------------------------------------------
# storage pools and bridges for the collectors' tests (named after the owning process, as guests)


def pool_info_bytes(name: str) -> dict[str, Union[str, int]]:
    """`virsh pool-info --bytes` as {State, Capacity, Allocation, Available, ...}; sizes as int."""
    out: dict[str, Union[str, int]] = {}
    for line in virsh("pool-info", "--bytes", name).splitlines():
        key, sep, value = line.partition(":")
        if sep:
            value = value.strip()
            out[key.strip()] = int(value) if value.isdigit() else value
    return out


def remove_pool(name: str) -> None:
    """Stop, delete (a logical pool: its VG and PV) and undefine a pool; no error if gone."""
    if run(["virsh", "-q", "-c", URI, "pool-uuid", name], check=False).returncode != 0:
        return
    xml = virsh("pool-dumpxml", name)
    run(["virsh", "-q", "-c", URI, "pool-destroy", name], check=False)
    if "type='logical'" in xml or 'type="logical"' in xml:
        run(["virsh", "-q", "-c", URI, "pool-delete", name], check=False)
    run(["virsh", "-q", "-c", URI, "pool-undefine", name], check=False)


def make_storage_pool(bed: "Testbed", kind: str, size_mib: int = 64) -> tuple[str, Path]:
    """A started pool named vet-<pid>-pool-<n>: 'dir' (a directory under the pool's own
    directory) or 'logical' (a VG of the same name on a loop device over a sparse file there).
    Returns (name, directory); remove it with remove_storage_pool (also on failure)."""
    name, _n, directory = bed._reserve("pool")
    try:
        if kind == "dir":
            target = directory / "pool"
            target.mkdir()
            virsh("pool-define-as", name, "dir", "--target", str(target))
        elif kind == "logical":
            backing = directory / "pv.img"
            with open(backing, "wb") as f:
                f.truncate(size_mib << 20)
            loop = _losetup(backing)
            virsh("pool-define-as", name, "logical", "--source-dev", loop, "--source-name", name,
                  "--target", f"/dev/{name}")
        else:
            raise ValueError("kind must be dir or logical")
        virsh("pool-build", name)  # logical: pvcreate + vgcreate
        virsh("pool-start", name)
        return name, directory
    except BaseException:
        remove_storage_pool(name, directory)
        raise


def remove_storage_pool(name: str, directory: Path) -> None:
    """remove_pool, then a VG that survived it, the loop device and the directory."""
    try:
        remove_pool(name)
    finally:
        if run(["vgs", name], check=False).returncode == 0:
            run(["vgremove", "-f", name], check=False)
        for dev in _loop_devices():
            if (dev.get("back-file") or "").startswith(str(directory) + "/"):
                run(["pvremove", "-ff", "-y", dev["name"]], check=False)
        _detach_loops_under(directory)
        shutil.rmtree(directory, ignore_errors=True)


def make_bridge(bed: "Testbed") -> str:
    """A Linux bridge with no address, up, named after the owning process (vtb<pid><n>);
    delete it with delete_bridge."""
    name = _tap_name("b%d" % next(_counter), bed.prefix)
    run(["ip", "link", "add", name, "type", "bridge"])
    try:
        run(["ip", "link", "set", name, "up"])
    except BaseException:
        delete_bridge(name)
        raise
    return name


def delete_bridge(name: str) -> None:
    run(["ip", "link", "delete", name, "type", "bridge"], check=False)


# --------------------------------------------------------------------------------------------
# a guest that runs qemu-guest-agent: a Debian cloud kernel and a busybox initrd with qemu-ga


AGENT_PACKAGES = ("qemu-guest-agent", "busybox-static", "linux-image-cloud-amd64")
AGENT_MODULES = ("virtio_ring", "virtio", "virtio_pci_legacy_dev", "virtio_pci_modern_dev", "virtio_pci",
                 "virtio_console", "virtio_blk")
# The guest's init: mounts its data disk, prints `df` between markers on its console (ttyS0),
# starts qemu-ga on the virtio-serial port, then obeys lines on ttyS1 (the host's command socket):
# "stop" / "cont" send SIGSTOP / SIGCONT to qemu-ga (a hung agent), "df" prints df again.
AGENT_INIT = """#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
for m in %s; do insmod /lib/modules/$m.ko; done
mkdir -p /var/run /mnt/data
hostname vet-agent-guest
mount -t ext4 /dev/vda /mnt/data
show_df() { echo vet-df-begin; df -P -B1 /mnt/data; echo vet-df-end; }
show_df
qemu-ga -m virtio-serial -p /dev/vport0p1 -d -f /var/run/qga.pid
echo vet-agent-started
while read -r cmd < /dev/ttyS1; do
  case "$cmd" in
    stop) kill -STOP $(cat /var/run/qga.pid); echo vet-agent-stopped;;
    cont) kill -CONT $(cat /var/run/qga.pid); echo vet-agent-continued;;
    df) show_df;;
  esac
done
""" % " ".join(AGENT_MODULES)
AGENT_OS_RELEASE = 'ID=vetbox\nNAME="vet busybox"\nVERSION_ID=1\nPRETTY_NAME="vet busybox 1"\n'


def _cpio_newc(entries: list[tuple[str, int, bytes]]) -> bytes:
    """A newc cpio archive of (path, mode, data) entries (directories with mode 0o040755)."""
    out = bytearray()

    def add(name: str, mode: int, data: bytes, ino: int) -> None:
        nb = name.encode() + b"\0"
        hdr = "070701" + "".join("%08x" % v for v in (ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(nb), 0))
        out.extend(hdr.encode() + nb)
        out.extend(b"\0" * (-len(out) % 4))
        out.extend(data)
        out.extend(b"\0" * (-len(out) % 4))

    for ino, (name, mode, data) in enumerate(entries, 1):
        add(name, mode, data, ino)
    add("TRAILER!!!", 0, b"", 0)
    return bytes(out)


def agent_guest_parts() -> tuple[Path, Path]:
    """(kernel, initrd) for the agent guest, built once into IMAGE_DIR/agent-parts from Debian's
    packages (apt-get download: the registry's ordinary client) and the host's shared libraries
    for qemu-ga. Raises TestbedError when the packages cannot be had."""
    import gzip

    parts = IMAGE_DIR / "agent-parts"
    kernel, initrd = parts / "vmlinuz", parts / "initrd.gz"
    if kernel.exists() and initrd.exists():
        return kernel, initrd
    work = Path(tempfile.mkdtemp(prefix="agent-", dir=IMAGE_DIR))
    try:
        depends = run(["apt-cache", "depends", "linux-image-cloud-amd64"]).stdout
        m = re.search(r"Depends: (linux-image-\S+-cloud-amd64)", depends)
        if not m:
            raise TestbedError("no cloud kernel package: " + depends.strip())
        names = [p for p in AGENT_PACKAGES if p != "linux-image-cloud-amd64"] + [m.group(1)]
        p = subprocess.run(["apt-get", "download", *names], cwd=work, capture_output=True, text=True, timeout=600)
        if p.returncode != 0:
            raise TestbedError("apt-get download %s: %s" % (" ".join(names), p.stderr.strip()[-500:]))
        root = work / "x"
        for deb in work.glob("*.deb"):
            run(["dpkg-deb", "-x", str(deb), str(root)])
        entries: list[tuple[str, int, bytes]] = []
        for d in ("bin", "sbin", "lib", "lib/modules", "lib64", "lib/x86_64-linux-gnu", "proc", "sys", "dev",
                  "etc", "run", "var", "tmp", "mnt"):
            entries.append((d, 0o040755, b""))
        entries.append(("init", 0o100755, AGENT_INIT.encode()))
        entries.append(("etc/os-release", 0o100644, AGENT_OS_RELEASE.encode()))
        entries.append(("bin/busybox", 0o100755, (root / "bin/busybox").read_bytes()))
        qga = root / "usr/sbin/qemu-ga"
        entries.append(("bin/qemu-ga", 0o100755, qga.read_bytes()))
        for lib in re.findall(r"(/lib\S*\.so[.\d]*)", run(["ldd", str(qga)]).stdout):
            entries.append((lib.lstrip("/"), 0o100755, Path(lib).read_bytes()))
        modules = next((root / "lib/modules").iterdir())
        for name in AGENT_MODULES:
            ko = next(modules.rglob(name + ".ko"))
            entries.append(("lib/modules/%s.ko" % name, 0o100644, ko.read_bytes()))
        parts.mkdir(parents=True, exist_ok=True)
        tmp_initrd = parts / "initrd.gz.tmp"
        tmp_initrd.write_bytes(gzip.compress(_cpio_newc(entries), compresslevel=1))
        shutil.copy(next((root / "boot").glob("vmlinuz-*")), parts / "vmlinuz.tmp")
        os.replace(parts / "vmlinuz.tmp", kernel)
        os.replace(tmp_initrd, initrd)
        return kernel, initrd
    finally:
        shutil.rmtree(work, ignore_errors=True)


class AgentGuest(Guest):
    """A TCG guest (this host's KVM hangs stock kernels early) that boots the agent initrd, with a
    64 MiB ext4 data disk holding a 5 MB file, a guest-agent channel, its console in console.log
    and a command socket on its second serial port (see AGENT_INIT)."""

    @property
    def console_log(self) -> Path:
        return self.directory / "console.log"

    def command(self, cmd: str) -> None:
        """Send one line to the guest's init over its second serial port."""
        import socket

        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(str(self.directory / "cmd.sock"))
            s.sendall(cmd.encode() + b"\n")
            time.sleep(0.2)

    def console_df(self, after: int = 0) -> dict[str, dict[str, int]]:
        """The last `df -P -B1` the guest printed (after byte offset ``after`` of its console):
        {mountpoint: {size, used, available}}."""
        text = self.console_log.read_bytes()[after:].decode(errors="replace").replace("\r", "")
        blocks = re.findall(r"vet-df-begin\n(.*?)vet-df-end", text, re.S)
        if not blocks:
            return {}
        out = {}
        for line in blocks[-1].splitlines()[1:]:
            f = line.split()
            if len(f) >= 6 and f[1].isdigit():
                out[f[5]] = {"size": int(f[1]), "used": int(f[2]), "available": int(f[3])}
        return out

    def wait_agent(self, timeout: float = 120.0) -> float:
        """Wait until `virsh guestinfo` answers; returns the seconds waited."""
        t0 = time.monotonic()
        while True:
            p = run(["virsh", "-q", "-c", URI, "guestinfo", self.name, "--hostname"], check=False)
            if p.returncode == 0:
                return time.monotonic() - t0
            if time.monotonic() - t0 > timeout:
                raise TestbedError(f"{self.name}: guest agent not answering within {timeout} s: {p.stderr.strip()}")
            time.sleep(1.0)


def make_agent_guest(bed: "Testbed", start: bool = True) -> AgentGuest:
    kernel, initrd = agent_guest_parts()
    name, _n, directory = bed._reserve("agent")
    try:
        fill = directory / "fill"
        fill.mkdir()
        (fill / "blob").write_bytes(os.urandom(5_000_000))
        data = directory / "data.img"
        with open(data, "wb") as f:
            f.truncate(64 << 20)
        run(["mkfs.ext4", "-q", "-d", str(fill), str(data)])
        shutil.rmtree(fill)
        d = escape(str(directory))
        xml = f"""<domain type='qemu'>
  <name>{escape(name)}</name>
  <memory unit='MiB'>256</memory>
  <vcpu placement='static'>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type><kernel>{escape(str(kernel))}</kernel>
    <initrd>{escape(str(initrd))}</initrd><cmdline>console=ttyS0 quiet loglevel=1</cmdline></os>
  <on_poweroff>destroy</on_poweroff><on_reboot>destroy</on_reboot><on_crash>destroy</on_crash>
  <devices>
    <disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='{d}/data.img'/>
      <target dev='vda' bus='virtio'/></disk>
    <channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/></channel>
    <serial type='file'><source path='{d}/console.log'/><target port='0'/></serial>
    <serial type='unix'><source mode='bind' path='{d}/cmd.sock'/><target port='1'/></serial>
    <console type='file'><source path='{d}/console.log'/><target type='serial' port='0'/></console>
  </devices>
</domain>
"""
        (directory / "domain.xml").write_text(xml)
        guest = AgentGuest(name, "agent", xml, directory, True, str(data), None)
        virsh("define", str(directory / "domain.xml"))
        bed.guests.append(guest)
        if start:
            guest.start()
        return guest
    except BaseException:
        if domain_exists(name):
            run(["virsh", "-q", "-c", URI, "destroy", name], check=False)
            run(["virsh", "-q", "-c", URI, "undefine", name], check=False)
        shutil.rmtree(directory, ignore_errors=True)
        raise


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
                run(["virsh", "-q", "-c", URI, "destroy", name], check=False)
            if domain_exists(name):
                run(["virsh", "-q", "-c", URI, "undefine", name], check=False)
            removed.append(name)
    pools = run(["virsh", "-q", "-c", URI, "pool-list", "--all", "--name"], check=False).stdout.split()
    for name in pools:
        m = _NAME_RE.match(name)
        if m and is_dead(int(m.group(1))):
            remove_storage_pool(name, IMAGE_DIR / name)
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
