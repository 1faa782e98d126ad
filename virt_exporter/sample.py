"""The Sample: everything one round of the source layer read, timestamped before the reads.

A Sample is plain data. The source layer builds it, the calculators (``calc``) compare two of them,
and the collectors translate one into metric families. Nothing here talks to libvirt or /proc.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, FrozenSet, List, Mapping, Optional, Tuple, Union


@dataclasses.dataclass(frozen=True)
class CpuTimes:
    """Jiffies of one /proc/stat cpu line, first seven columns (user nice system idle iowait irq softirq)."""

    user: int
    nice: int
    system: int
    idle: int
    iowait: int
    irq: int
    softirq: int

    @property
    def busy(self) -> int:
        """user + nice + system, Neat's busy time (guest time is already inside user/system)."""
        return self.user + self.nice + self.system

    @property
    def total(self) -> int:
        return self.user + self.nice + self.system + self.idle + self.iowait + self.irq + self.softirq


@dataclasses.dataclass(frozen=True)
class HostCpu:
    """The aggregate and per-CPU lines of /proc/stat."""

    aggregate: CpuTimes
    per_cpu: Mapping[int, CpuTimes]


@dataclasses.dataclass(frozen=True)
class NodeInfo:
    """virNodeGetInfo: logical CPUs and nominal core MHz (its memory figure is not trusted)."""

    cpus: int
    core_mhz: int
    model: str


@dataclasses.dataclass(frozen=True)
class HostFacts:
    """What changes only with the host, read once per connection: identity and NUMA topology."""

    hostname: str
    libvirt_version: str
    hypervisor_version: str
    cpu_model: str
    # Host NUMA cell -> its logical CPUs (capabilities topology).
    cell_cpus: Mapping[int, List[int]] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class NetDevCounters:
    """Byte and packet counters of one host network device (/proc/net/dev)."""

    rx_bytes: int
    rx_packets: int
    tx_bytes: int
    tx_packets: int


@dataclasses.dataclass(frozen=True)
class DomainStats:
    """One domain's entry of a bulk stats call.

    ``stats`` is libvirt's flat dict as returned (``"cpu.time"``, ``"block.0.rd.bytes"`` …), kept raw
    so nothing is lost and no time is spent restructuring keys a collector does not read.
    ``complete`` is False when groups that were asked for came back missing (a stuck QEMU).
    """

    uuid: str
    name: str
    stats: Mapping[str, Any]
    complete: bool = True

    @property
    def state(self) -> int:
        return int(self.stats.get("state.state", 0))

    @property
    def reason(self) -> int:
        return int(self.stats.get("state.reason", 0))

    @property
    def active(self) -> bool:
        # 5 = VIR_DOMAIN_SHUTOFF, 0 = NOSTATE; both have no running QEMU and no stats groups.
        return self.state not in (0, 5)

    def devices(self, group: str) -> List[DeviceStats]:
        """The ``group.N.*`` entries of a device group ("block", "net", "vcpu") as one dict per index.

        Keys lose their ``group.N.`` prefix; each dict gets ``"index"`` = N. Ordered by N.
        """
        return indexed_devices(self.stats, group)


# One device's entries of an indexed stats group, its ``group.N.`` prefix left off, plus "index" = N:
# counters and sizes are ints, names and paths strings.
DeviceStats = Dict[str, Union[int, str]]

# Per-device keys libvirt reports in each indexed group (libvirt's virDomainStatsGetAll docs).
DEVICE_FIELDS: Dict[str, Tuple[str, ...]] = {
    "block": ("name", "backingIndex", "path", "rd.reqs", "rd.bytes", "rd.times", "wr.reqs", "wr.bytes",
              "wr.times", "fl.reqs", "fl.times", "errors", "allocation", "capacity", "physical", "threshold"),
    "net": ("name", "rx.bytes", "rx.pkts", "rx.errs", "rx.drop", "tx.bytes", "tx.pkts", "tx.errs", "tx.drop"),
    "vcpu": ("state", "time", "wait", "delay", "halted"),
}
_KEYS: Dict[Tuple[str, int], Tuple[Tuple[str, str], ...]] = {}


def _device_keys(group: str, index: int) -> Tuple[Tuple[str, str], ...]:
    keys = _KEYS.get((group, index))
    if keys is None:
        keys = tuple((f, "%s.%d.%s" % (group, index, f)) for f in DEVICE_FIELDS[group])
        _KEYS[(group, index)] = keys
    return keys


def indexed_devices(stats: Mapping[str, Any], group: str) -> List[DeviceStats]:
    """Split libvirt's flat ``group.N.key`` entries into a list of per-device dicts (see DomainStats.devices).

    Looks up the documented keys directly (a scan of every key of every domain was the exporter's
    hottest loop at 1000 domains); other keys of the group are not copied.
    """
    count = stats.get(group + ".count")
    if count is None:
        # vcpu has "vcpu.current" / "vcpu.maximum" and indexes up to maximum - 1.
        count = stats.get(group + ".maximum", 0)
    devices: List[DeviceStats] = []
    get = stats.get
    for i in range(int(count)):
        dev: DeviceStats = {"index": i}
        for field, key in _device_keys(group, i):
            value = get(key)
            if value is not None:
                dev[field] = value
        devices.append(dev)
    return devices


def block_layers_with_top(stats: Mapping[str, Any]) -> List[Tuple[DeviceStats, bool]]:
    """Every ``block.N`` entry with whether it is its disk's top (guest-visible) layer.

    With the BACKING flag libvirt lists a disk's top layer first and its backing layers after it
    under the same name. The top layer has a ``backingIndex`` too (its index in the chain, e.g. 1),
    so "top" is "first entry of that name", not "has no backingIndex". Entries without a name are
    left out.
    """
    seen = set()
    out = []
    for dev in indexed_devices(stats, "block"):
        target = dev.get("name")
        if not target:
            continue
        out.append((dev, target not in seen))
        seen.add(target)
    return out


# --- domain identity, from the domain XML (source/domxml.py parses it; a cache keeps it per UUID) ---

@dataclasses.dataclass(frozen=True)
class BackingLayer:
    """One ``<backingStore>`` below a disk's top image (live XML numbers them: ``index``)."""

    index: Optional[int]        # libvirt's index, the N of vda[N] and of block stats' backingIndex
    source_type: Optional[str]  # file, block, network …
    driver_type: Optional[str]  # image format of this layer
    path: str


@dataclasses.dataclass(frozen=True)
class DiskInfo:
    target: str                 # vda, sdb … (bulk stats' block.N.name)
    device: str                 # disk, cdrom, floppy, lun
    source_type: Optional[str]  # file, block, network, volume, dir, nvme …
    path: str                   # file or device path, or "protocol:name" for network disks, "" when empty
    bus: str
    driver_type: Optional[str]  # image format: qcow2, raw …
    alias: str = ""             # device alias (virtio-disk0), what I/O error events name a disk by
    backing: Tuple[BackingLayer, ...] = ()
    # <iotune> limits as written (element name → value, e.g. total_bytes_sec → 1048576); absent = none.
    iotune: Tuple[Tuple[str, int], ...] = ()


@dataclasses.dataclass(frozen=True)
class InterfaceInfo:
    target: str       # host-side device (vnet0, tap…), bulk stats' net.N.name
    mac: str
    type: str         # ethernet, bridge, network, direct …
    source: str       # bridge / network / dev it is attached to
    model: str


@dataclasses.dataclass(frozen=True)
class NovaInfo:
    instance_name: str
    project_name: str
    project_uuid: str
    user_name: str
    user_uuid: str
    flavor: str


@dataclasses.dataclass(frozen=True)
class DomainInfo:
    uuid: str
    name: str
    os_type: str
    arch: str
    machine: str
    domain_type: str           # kvm, qemu …
    vcpus: int
    memory_kib: int
    disks: Tuple[DiskInfo, ...] = ()
    interfaces: Tuple[InterfaceInfo, ...] = ()
    nova: Optional[NovaInfo] = None
    numatune: Optional[Tuple[str, str]] = None   # (mode, nodeset) of <numatune><memory>
    perfmon_xml: Optional[str] = None            # the perfmon <config> in our metadata namespace
    title: str = ""                              # <title>, bounded like a metadata label value
    vcpu_cpuset: str = ""                        # <vcpu cpuset=…>: every vCPU's default affinity
    vcpu_pins: Tuple[Tuple[int, str], ...] = ()  # <cputune><vcpupin vcpu cpuset>
    emulator_cpuset: str = ""                    # <cputune><emulatorpin cpuset>
    metadata_labels: Tuple[str, ...] = ()        # one value per --collector.domain.metadata-label


@dataclasses.dataclass(frozen=True)
class HostMemory:
    """getMemoryStats(-1) or (cell): total and free, KiB as libvirt reports them."""

    total_kib: int
    free_kib: int


# What a collector may ask the reader to list once per sample (CollectorSpec.reads, source/listings.py).
DOMAIN_FLAGS = "domain_flags"      # Sample.autostart and Sample.persistent
STORAGE_POOLS = "storage_pools"    # Sample.storage_pools


@dataclasses.dataclass(frozen=True)
class StoragePool:
    """One storage pool as virStoragePoolGetInfo reports it (sizes as of libvirt's last refresh)."""

    name: str
    uuid: str
    type: str        # dir, logical, netfs … (the pool XML's type)
    state: int       # virStoragePoolState: 0 inactive, 1 building, 2 running, 3 degraded, 4 inaccessible
    capacity_bytes: int
    allocation_bytes: int
    available_bytes: int


@dataclasses.dataclass(frozen=True)
class Sample:
    """One consistent read of the host.

    ``wall_time_s`` / ``monotonic_s`` are taken *before* the libvirt call, so a rate over two samples
    covers the time the counters actually moved in. Rates use ``monotonic_s``; ``wall_time_s`` is
    for timestamps shown to users (perfmon's "now").
    ``domains`` is keyed by UUID: names can be reused by a new domain, UUIDs tell a restart apart.
    """

    wall_time_s: float
    monotonic_s: float
    up: bool
    domains: Mapping[str, DomainStats] = dataclasses.field(default_factory=dict)
    node: Optional[NodeInfo] = None
    host_cpu: Optional[HostCpu] = None
    host_memory: Optional[HostMemory] = None
    # libvirt stats time of this sample's bulk call(s), wall clock seconds.
    bulk_duration_s: float = 0.0
    # UUIDs of domains left out of (or incomplete in) this sample because they did not answer.
    unresponsive: FrozenSet[str] = frozenset()
    # Why the sample is not complete, one short line, or "" when it is.
    error: str = ""
    # Host identity and topology, as of the connection this sample was read on (None before one).
    host: Optional[HostFacts] = None
    # Host network devices by name.
    net_dev: Mapping[str, NetDevCounters] = dataclasses.field(default_factory=dict)
    # getMemoryStats(cell) per host NUMA cell.
    cell_memory: Mapping[int, HostMemory] = dataclasses.field(default_factory=dict)
    # libvirt domain ID by UUID (running domains; a new ID at every start: the restart test for rates).
    domain_ids: Mapping[str, int] = dataclasses.field(default_factory=dict)
    # QEMU pid by UUID (running domains; only when a collector needs them).
    qemu_pids: Mapping[str, int] = dataclasses.field(default_factory=dict)
    # /proc/meminfo MemAvailable, bytes (read with /proc/stat, whether libvirt answers or not).
    host_memory_available_bytes: Optional[int] = None
    # UUIDs of the domains that start with the host / are persistent, and the storage pools: read
    # only when a collector needs them (source/listings.py), else None; None too when the read failed.
    autostart: Optional[FrozenSet[str]] = None
    persistent: Optional[FrozenSet[str]] = None
    storage_pools: Optional[Tuple[StoragePool, ...]] = None
    # Why the listings are missing from an otherwise good sample, or "".
    listings_error: str = ""


# --- readings taken in the background, between samples ---------------------------------------------


@dataclasses.dataclass(frozen=True)
class DomainPlacement:
    """One domain's last reading. ``memory_bytes_by_node`` / ``vcpu_cpus`` are None when that part
    could not be read, and ``error`` then holds the reason; ``failures`` counts consecutive failed
    reads of the domain."""

    uuid: str
    name: str
    pid: Optional[int]
    memory_bytes_by_node: Optional[Mapping[int, int]]
    vcpu_cpus: Optional[Mapping[int, int]]
    read_monotonic_s: float
    duration_s: float
    error: str = ""
    failures: int = 0


@dataclasses.dataclass(frozen=True)
class NumaSnapshot:
    """What a scrape reads: the placements of the current domains and the reader's health.

    ``readable`` is False when a current domain could not be read twice in a row (once is a domain
    starting or stopping); ``reason`` says why (the worst reason seen, source/numa.py). ``refresh_duration_s`` is what
    reading every current domain once cost, from each one's last read.
    """

    domains: Mapping[str, DomainPlacement]
    node_cpus: Mapping[int, List[int]]
    readable: bool
    reason: str
    refresh_duration_s: float


@dataclasses.dataclass(frozen=True)
class BlockEventCounts:
    """A consistent copy of the counters.

    ``threshold_events`` is keyed (uuid, target, chain index) — the index as the event named the
    layer, None when it named just the disk (the top layer). Which index is the top is known only from
    a sample, so the collector maps indexes to ``backing_index`` labels, not this object.
    ``io_errors`` is keyed (uuid, source path, device alias, reason) as the event gives them; the
    collector maps path/alias to a target with the domain XML.
    """

    threshold_events: Mapping[Tuple[str, str, Optional[int]], int]
    io_errors: Mapping[Tuple[str, str, str, str], int]
    arm_errors_total: int


@dataclasses.dataclass(frozen=True)
class GuestFilesystem:
    """One filesystem the guest agent reports (virDomainGetGuestInfo fs.N.*)."""

    mountpoint: str
    fstype: str
    name: str
    total_bytes: Optional[int]
    used_bytes: Optional[int]


@dataclasses.dataclass(frozen=True)
class GuestAgentReading:
    """One domain's last guest-agent reading. ``up`` is False while its last call failed or has not
    answered within the reader's timeout (``error`` says which); ``os`` holds libvirt's os.* fields
    (id, name, version-id, kernel-release, machine …) and the filesystems are those of the last
    answer (empty while down)."""

    uuid: str
    name: str
    up: bool
    read_monotonic_s: float
    error: str = ""
    os: Mapping[str, str] = dataclasses.field(default_factory=dict)
    hostname: str = ""
    filesystems: Tuple[GuestFilesystem, ...] = ()


@dataclasses.dataclass(frozen=True)
class GuestAgentSnapshot:
    domains: Mapping[str, GuestAgentReading]


@dataclasses.dataclass(frozen=True)
class JobReading:
    """One active job's last GetJobStats (libvirt's typed parameters as returned, with its type and
    operation named), read at ``read_monotonic_s``; ``error`` says why the last read failed (the
    stats are then older)."""

    uuid: str
    name: str
    type: str
    operation: str
    stats: Mapping[str, Any]
    read_monotonic_s: float
    error: str = ""


@dataclasses.dataclass(frozen=True)
class JobSnapshot:
    """What a scrape reads: the active jobs, and ended jobs counted by (operation, outcome)."""

    active: Mapping[str, JobReading]
    completed: Mapping[Tuple[str, str], int]
    closing: FrozenSet[str] = frozenset()


@dataclasses.dataclass(frozen=True)
class ConnectionHealth:
    """The libvirt connection's own counters."""

    reconnects_total: int = 0
