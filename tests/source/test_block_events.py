"""source.block_events against a scripted libvirt: counting, de-duplication, arming and re-arming.

The real thing (libvirtd, QEMU's write threshold, ENOSPC) is in tests/integration/test_watermark.py;
this pins the logic with the event shapes measured there.
"""

from __future__ import annotations

import functools
import threading
import time
from typing import Any, Callable, Dict, List, Optional

import libvirt
import pytest

from bounds import wait_for
from fakelibvirt import FakeConnect
from samples import sample
from virt_exporter.calc.watermark import MIB, WatermarkPolicy, layer_label, thresholds_due, top_indexes
from virt_exporter.sample import DomainStats, Sample
from virt_exporter.source.block_events import BlockEvents, io_error_reason, parse_device
from virt_exporter.source.connection import LibvirtUnavailable
from virt_exporter.source.domxml import DomainXMLCache

UUID = "11111111-2222-3333-4444-555555555555"
POLICY = WatermarkPolicy.from_options(64, 50)  # limit 32 MiB


def domain_xml(uuid=UUID, name="vm1", disk_type="block", fmt="qcow2") -> str:
    src = "<source dev='/dev/loop7'/>" if disk_type == "block" else "<source file='/img/vm1.qcow2'/>"
    return f"""<domain type='kvm'><name>{name}</name><uuid>{uuid}</uuid>
      <memory>65536</memory><vcpu>1</vcpu><os><type arch='x86_64' machine='pc'>hvm</type></os>
      <devices>
        <disk type='{disk_type}' device='disk'><driver name='qemu' type='{fmt}'/>{src}
          <target dev='vda' bus='virtio'/><alias name='virtio-disk0'/></disk>
        <disk type='file' device='cdrom'><driver name='qemu' type='raw'/><target dev='hdc' bus='ide'/></disk>
      </devices></domain>"""


class FakeDomain:
    def __init__(self, uuid: str, name: str, xml: str, stats: Dict[str, Any]) -> None:
        self.uuid, self._name, self.xml, self.stats = uuid, name, xml, stats
        self.thresholds: List[tuple] = []
        self.fail_set: Optional[libvirt.libvirtError] = None

    def UUIDString(self) -> str:
        return self.uuid

    def name(self) -> str:
        return self._name

    def XMLDesc(self, flags: int) -> str:
        return self.xml

    def setBlockThreshold(self, dev: str, threshold: int, flags: int = 0) -> int:
        if self.fail_set is not None:
            raise self.fail_set
        self.thresholds.append((dev, threshold))
        # What QEMU + libvirt then report in the stats.
        for i in range(self.stats["block.count"]):
            if "%s[%s]" % (self.stats["block.%d.name" % i], self.stats["block.%d.backingIndex" % i]) == dev:
                self.stats["block.%d.threshold" % i] = threshold
        return 0

    def fire(self, i: int) -> None:
        """QEMU disarms a threshold when it fires."""
        self.stats.pop("block.%d.threshold" % i, None)


class FakeConn(FakeConnect):
    def __init__(self, domains: List[FakeDomain]) -> None:
        self.by_uuid = {d.uuid: d for d in domains}
        self.stats_calls: List[Any] = []

    def domains(self) -> List[FakeDomain]:
        return list(self.by_uuid.values())

    def getAllDomainStats(self, stats: int = 0, flags: int = 0) -> List[Any]:
        self.stats_calls.append(("all", stats, flags))
        return [(d, self.stats_of(d, flags)) for d in self.domains()]

    def domainListGetStats(self, doms: List[Any], stats: int = 0, flags: int = 0) -> List[Any]:
        self.stats_calls.append(([d.uuid for d in doms], stats, flags))
        return [(d, self.stats_of(d, flags)) for d in doms]

    def stats_of(self, dom: FakeDomain, flags: int) -> Dict[str, Any]:
        return dict(dom.stats)


class FakeConnection:
    """Connection's surface as BlockEvents uses it."""

    def __init__(self, conn: FakeConn, read_only: bool = False) -> None:
        self.conn = conn
        self.read_only = read_only
        self.events: Dict[int, Callable[..., Any]] = {}
        self.connect_hooks: List[Callable[..., Any]] = []
        self.up = True

    def on_event(self, event_id: int, callback: Callable[..., Any]) -> None:
        self.events[event_id] = callback

    def on_connect(self, hook: Callable[..., Any]) -> None:
        self.connect_hooks.append(hook)

    def call(self, fn: Callable[[Any], Any], timeout_s: float) -> Any:
        if not self.up:
            raise LibvirtUnavailable("not connected")
        return fn(self.conn)


def block_stats(allocation: int, physical: int, capacity: int = 1024 * MIB, threshold: Optional[int] = None,
                backing: bool = False) -> Dict[str, Any]:
    s: Dict[str, Any] = {"state.state": 1, "state.reason": 1, "block.count": 2 if backing else 1,
                         "block.0.name": "vda", "block.0.path": "/dev/loop7", "block.0.backingIndex": 1,
                         "block.0.allocation": allocation, "block.0.capacity": capacity,
                         "block.0.physical": physical, "block.0.rd.reqs": 1, "block.0.wr.reqs": 1}
    if threshold is not None:
        s["block.0.threshold"] = threshold
    if backing:
        s.update({"block.1.name": "vda", "block.1.path": "/dev/loop6", "block.1.backingIndex": 2,
                  "block.1.allocation": 0, "block.1.capacity": capacity, "block.1.physical": physical})
    return s


def make(stats: Dict[str, Any], arm: bool = True, xml: Optional[str] = None, clock=time.monotonic):
    dom = FakeDomain(UUID, "vm1", xml or domain_xml(), stats)
    conn = FakeConn([dom])
    connection = FakeConnection(conn, read_only=not arm)
    cache = DomainXMLCache()
    events = BlockEvents(connection, cache, functools.partial(thresholds_due, POLICY), arm_thresholds=arm, clock=clock)
    return events, dom, conn, connection, cache


def sample_of(dom: FakeDomain) -> Sample:
    return sample(domains=[DomainStats(uuid=dom.uuid, name=dom.name(), stats=dict(dom.stats))])


def test_parse_device_and_labels():
    assert parse_device("vda") == ("vda", None)
    assert parse_device("vda[12]") == ("vda", 12)
    assert parse_device("sdb[1]") == ("sdb", 1)
    assert layer_label(None, 3) is None
    assert layer_label(3, 3) is None
    assert layer_label(2, 3) == 2
    assert io_error_reason("enospc") == "enospc"
    assert io_error_reason("") == "unspecified"


def test_arming_needs_a_read_write_connection():
    with pytest.raises(ValueError):
        BlockEvents(FakeConnection(FakeConn([]), read_only=True), DomainXMLCache(), arm_thresholds=True)


def test_read_only_registers_only_counting_events_and_never_calls():
    events, dom, conn, connection, _cache = make(block_stats(0, 128 * MIB), arm=False)
    events.start()
    # LIFECYCLE comes through the XML cache: libvirt refuses a second registration of an event ID
    assert set(connection.events) == {libvirt.VIR_DOMAIN_EVENT_ID_BLOCK_THRESHOLD,
                                      libvirt.VIR_DOMAIN_EVENT_ID_IO_ERROR_REASON}
    assert connection.connect_hooks == []
    events.on_lifecycle(UUID, libvirt.VIR_DOMAIN_EVENT_STARTED, 0)
    events.observe(sample_of(dom), {})
    assert conn.stats_calls == [] and dom.thresholds == []


def test_threshold_event_pair_counts_once():
    # measured: a threshold set through "vda" fires as "vda" then "vda[1]", same path/threshold/excess
    t = [100.0]
    events, dom, *_ = make(block_stats(0, 128 * MIB), arm=False, clock=lambda: t[0])
    events.on_block_threshold(None, dom, "vda", "/dev/loop7", 20840448, 65536)
    events.on_block_threshold(None, dom, "vda[1]", "/dev/loop7", 20840448, 65536)
    assert events.snapshot().threshold_events == {(UUID, "vda", None): 1}
    # a later firing (re-armed) is a new event even with the same figures
    t[0] += 10
    events.on_block_threshold(None, dom, "vda[1]", "/dev/loop7", 20840448, 65536)
    assert events.snapshot().threshold_events == {(UUID, "vda", None): 1, (UUID, "vda", 1): 1}
    # a different excess within the window is a different firing
    events.on_block_threshold(None, dom, "vda[1]", "/dev/loop7", 20840448, 131072)
    assert events.snapshot().threshold_events[(UUID, "vda", 1)] == 2


def test_io_errors_counted_by_path_alias_and_reason_and_dropped_on_undefine():
    events, dom, *_ = make(block_stats(0, 8 * MIB), arm=False)
    events.on_io_error(None, dom, "/dev/loop7", "virtio-disk0", 1, "enospc")
    events.on_io_error(None, dom, "/dev/loop7", "virtio-disk0", 1, "enospc")
    events.on_io_error(None, dom, "/dev/loop7", "virtio-disk0", 1, "")
    assert events.snapshot().io_errors == {(UUID, "/dev/loop7", "virtio-disk0", "enospc"): 2,
                                           (UUID, "/dev/loop7", "virtio-disk0", "unspecified"): 1}
    events.on_lifecycle(UUID, libvirt.VIR_DOMAIN_EVENT_STOPPED, 0)
    assert sum(events.snapshot().io_errors.values()) == 3  # a restart keeps the counters
    events.on_lifecycle(UUID, libvirt.VIR_DOMAIN_EVENT_UNDEFINED, 0)
    assert events.snapshot().io_errors == {}


def test_reconcile_arms_top_at_physical_minus_limit_with_indexed_name():
    events, dom, conn, _c, cache = make(block_stats(10 * MIB, 128 * MIB))
    assert events.reconcile(None) == 1
    # indexed name: libvirt then emits one event per firing, not two
    assert dom.thresholds == [("vda[1]", 96 * MIB)]
    assert cache.snapshot()[UUID].disks[0].target == "vda"  # XML fetched into the cache
    # already armed: nothing more
    assert events.reconcile([UUID]) == 0 and dom.thresholds == [("vda[1]", 96 * MIB)]


def test_reconcile_skips_file_backed_qcow2_and_shut_off_domains():
    events, dom, *_ = make(block_stats(10 * MIB, 128 * MIB), xml=domain_xml(disk_type="file"))
    assert events.reconcile(None) == 0 and dom.thresholds == []
    events, dom, *_ = make({"state.state": 5, "state.reason": 1})
    assert events.reconcile(None) == 0


def asked(events: BlockEvents, monkeypatch) -> List[str]:
    """The domains ``events`` asks its worker to reconcile (request_reconcile), recorded instead."""
    uuids: List[str] = []
    monkeypatch.setattr(events, "request_reconcile", uuids.append)
    return uuids


def test_no_rearm_until_storage_grows(monkeypatch):
    events, dom, conn, _c, _cache = make(block_stats(10 * MIB, 128 * MIB))
    requests = asked(events, monkeypatch)
    events.reconcile(None)
    # guest writes past 96 MiB: QEMU fires and disarms
    dom.stats.update({"block.0.allocation": 97 * MIB})
    dom.fire(0)
    events.on_block_threshold(None, dom, "vda[1]", "/dev/loop7", 96 * MIB, MIB)
    assert requests == [UUID]  # the event asks for a re-arm ...
    assert events.reconcile([UUID]) == 0  # ... but allocation is past it: arming would fire at once
    events.observe(sample_of(dom), {UUID: _info(events)})
    assert requests == [UUID]  # and scrapes do not keep asking
    # an extension: physical 192 MiB → re-armed at 160 MiB
    dom.stats["block.0.physical"] = 192 * MIB
    assert events.reconcile([UUID]) == 1
    assert dom.thresholds[-1] == ("vda[1]", 160 * MIB)
    assert events.snapshot().threshold_events == {(UUID, "vda", 1): 1}


def _info(events: BlockEvents):
    return events.xml_cache.snapshot()[UUID]


def test_observe_queues_only_what_is_due(monkeypatch):
    events, dom, _conn, _c, cache = make(block_stats(10 * MIB, 128 * MIB))
    requests = asked(events, monkeypatch)
    cache.store(UUID, domain_xml())
    infos = cache.snapshot()
    events.observe(sample_of(dom), infos)
    assert requests == [UUID]
    dom.stats["block.0.threshold"] = 96 * MIB
    events.observe(sample_of(dom), infos)
    assert requests == [UUID]
    # a down sample or an unknown domain queues nothing
    events.observe(sample(up=False), infos)
    dom.stats.pop("block.0.threshold")
    events.observe(sample_of(dom), {})
    assert requests == [UUID]


def test_failed_arming_is_counted_and_backed_off(monkeypatch):
    t = [1000.0]
    events, dom, _conn, _c, cache = make(block_stats(10 * MIB, 128 * MIB), clock=lambda: t[0])
    requests = asked(events, monkeypatch)
    err = libvirt.libvirtError("operation forbidden: read only access prevents virDomainSetBlockThreshold")
    dom.fail_set = err
    assert events.reconcile(None) == 0
    assert events.snapshot().arm_errors_total == 1
    # within the back-off neither observe nor reconcile tries again
    events.observe(sample_of(dom), cache.snapshot())
    assert requests == []
    assert events.reconcile([UUID]) == 0 and events.snapshot().arm_errors_total == 1
    t[0] += 61
    dom.fail_set = None
    assert events.reconcile([UUID]) == 1


def test_worker_arms_after_connect_and_domain_start():
    events, dom, conn, connection, cache = make(block_stats(10 * MIB, 128 * MIB))
    connection.up = False  # the connect hook runs before the connection is published: retried
    events.start()
    try:
        assert connection.connect_hooks == [events.on_connect]
        time.sleep(0.3)
        assert dom.thresholds == []
        connection.up = True
        wait_for(lambda: dom.thresholds == [("vda[1]", 96 * MIB)], 5.0, "the first threshold", 0.02)
        # the domain restarts: QEMU lost its threshold, the STARTED event re-arms it
        dom.fire(0)
        # as the XML cache relays it (the cache owns the LIFECYCLE registration)
        cache.register_events(connection.on_event)
        connection.events[libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE](None, dom, libvirt.VIR_DOMAIN_EVENT_STARTED, 0)
        wait_for(lambda: len(dom.thresholds) == 2, 5.0, "a second threshold", 0.02)
        assert conn.stats_calls[-1][0] == [UUID]
        # a threshold event after an extension someone made at the same time: re-armed at once
        dom.fire(0)
        dom.stats.update({"block.0.allocation": 97 * MIB, "block.0.physical": 192 * MIB})
        connection.events[libvirt.VIR_DOMAIN_EVENT_ID_BLOCK_THRESHOLD](None, dom, "vda[1]", "/dev/loop7",
                                                                       96 * MIB, MIB)
        wait_for(lambda: dom.thresholds[-1] == ("vda[1]", 160 * MIB), 5.0, "the re-armed threshold", 0.02)
    finally:
        events.stop()


def test_top_indexes():
    dom = DomainStats(uuid=UUID, name="vm1", stats=block_stats(0, MIB, backing=True))
    assert top_indexes(dom) == {"vda": 1}


def test_counters_are_thread_safe():
    events, dom, *_ = make(block_stats(0, MIB), arm=False)

    def burst(k: int) -> None:
        for i in range(500):
            events.on_block_threshold(None, dom, "vda[1]", "/dev/loop7", k, i)  # all distinct
            events.on_io_error(None, dom, "/dev/loop7", "virtio-disk0", 1, "enospc")

    threads = [threading.Thread(target=burst, args=(k,)) for k in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    snap = events.snapshot()
    assert snap.threshold_events == {(UUID, "vda", 1): 2000}
    assert sum(snap.io_errors.values()) == 2000
