"""source.listings and its place in a sample: pool types read once per pool, a pool undefined between
the list and the info call, and a failed listing that leaves the sample (and every other collector)
standing while the storage_pool collector reports its failure."""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, FrozenSet, List, Optional

import libvirt
import pytest

import fakelibvirt
from bounds import wait_for
from fakelibvirt import FakeHost, connected, libvirt_error
from virt_exporter.collectors import load_all
from virt_exporter.collectors.base import REGISTRY
from virt_exporter.exporter import Exporter
from virt_exporter.sample import DOMAIN_FLAGS, STORAGE_POOLS, Sample
from virt_exporter.sampler import Sampler, SamplerOptions
from virt_exporter.source import bulk
from virt_exporter.source.domxml import DomainXMLCache
from virt_exporter.source.listings import ListingReader
from virt_exporter.source.reader import SampleReader

pytestmark = pytest.mark.timeout(30)


class Pool:
    def __init__(self, name: str, kind: str = "dir", gone: bool = False) -> None:
        self._name, self.kind, self.gone, self.xml_reads = name, kind, gone, 0

    def name(self) -> str:
        return self._name

    def UUIDString(self) -> str:
        return "uuid-" + self._name

    def info(self) -> List[int]:
        if self.gone:
            raise libvirt_error(libvirt.VIR_ERR_NO_STORAGE_POOL)
        return [2, 1000, 300, 700]

    def XMLDesc(self, flags: int = 0) -> str:
        self.xml_reads += 1
        return "<pool type='%s'><name>%s</name></pool>" % (self.kind, self._name)


class Conn:
    def __init__(self, pools: List[Pool]) -> None:
        self.pools = pools
        self.list_flags: List[int] = []

    def listAllStoragePools(self, flags: int = 0) -> List[Pool]:
        return list(self.pools)

    def listAllDomains(self, flags: int = 0) -> List[Any]:
        self.list_flags.append(flags)
        return []


def test_pools_sorted_types_read_once_and_a_vanished_pool_skipped():
    b, a, gone = Pool("b", "logical"), Pool("a"), Pool("c", gone=True)
    conn = Conn([b, a, gone])
    reader = ListingReader([STORAGE_POOLS])
    for _ in range(3):
        got = reader.storage_pools(conn)
    assert [(p.name, p.type, p.state, p.capacity_bytes, p.allocation_bytes, p.available_bytes)
            for p in got] == [("a", "dir", 2, 1000, 300, 700), ("b", "logical", 2, 1000, 300, 700)]
    assert (a.xml_reads, b.xml_reads) == (1, 1)
    assert conn.list_flags == []


def test_domain_flags_are_two_filtered_list_calls_and_a_failure_clears_the_last():
    conn = Conn([])
    reader = ListingReader([DOMAIN_FLAGS])
    assert reader.last_domain_flags is None  # nothing read yet
    assert reader.domain_flags(conn) == (frozenset(), frozenset())
    assert sorted(conn.list_flags) == sorted([libvirt.VIR_CONNECT_LIST_DOMAINS_AUTOSTART,
                                              libvirt.VIR_CONNECT_LIST_DOMAINS_PERSISTENT])
    assert reader.last_domain_flags == (frozenset(), frozenset())

    def refuse(flags: int = 0) -> List[Any]:
        raise libvirt_error(libvirt.VIR_ERR_INTERNAL_ERROR)

    conn.listAllDomains = refuse  # type: ignore[method-assign]
    with pytest.raises(libvirt.libvirtError):
        reader.domain_flags(conn)
    assert reader.last_domain_flags is None  # a failed listing is not the last listing


class Dom:
    def __init__(self, uuid: str) -> None:
        self.uuid = uuid

    def UUIDString(self) -> str:
        return self.uuid


class Listing:
    """A connection whose domain listings answer ``uuids``, or fail; held at ``gate`` until it is set."""

    def __init__(self, uuids: List[str], gate: Optional[threading.Event] = None, fail: bool = False) -> None:
        self.uuids, self.gate, self.fail = uuids, gate, fail
        self.entered = threading.Event()

    def listAllDomains(self, flags: int = 0) -> List[Dom]:
        self.entered.set()
        if self.gate is not None:
            self.gate.wait(10)
        if self.fail:
            raise libvirt_error(libvirt.VIR_ERR_INTERNAL_ERROR)
        return [Dom(u) for u in self.uuids]


@pytest.mark.parametrize("late_fails", [False, True], ids=["late-answer", "late-error"])
def test_a_late_listing_leaves_a_newer_one_standing(late_fails: bool):
    """An abandoned listing that returns after a newer one neither puts its older flags back nor,
    failing, clears the newer ones."""
    reader = ListingReader([DOMAIN_FLAGS])
    gate = threading.Event()
    old = Listing(["old"], gate, fail=late_fails)
    late = threading.Thread(target=lambda: pytest.raises(libvirt.libvirtError, reader.domain_flags, old)
                            if late_fails else reader.domain_flags(old))
    late.start()
    assert old.entered.wait(10)
    new = frozenset({"new"})
    assert reader.domain_flags(Listing(["new"])) == (new, new)
    gate.set()
    late.join(10)
    assert not late.is_alive()
    assert reader.last_domain_flags == (new, new)


def test_other_pool_errors_are_raised_for_the_connection_to_judge():
    pool = Pool("x")
    pool.info = lambda: (_ for _ in ()).throw(libvirt_error(libvirt.VIR_ERR_INTERNAL_ERROR))  # type: ignore
    with pytest.raises(libvirt.libvirtError):
        ListingReader([STORAGE_POOLS]).storage_pools(Conn([pool]))


def test_a_libvirtd_without_a_storage_driver_has_no_pools():
    """Debian 13's QEMU-only libvirtd answers the pool list with VIR_ERR_NO_SUPPORT (measured on the
    second hypervisor): no pools, not an error."""
    conn = Conn([])

    def unsupported(flags: int = 0) -> List[Pool]:
        raise libvirt_error(libvirt.VIR_ERR_NO_SUPPORT)

    conn.listAllStoragePools = unsupported  # type: ignore[method-assign]
    assert ListingReader([STORAGE_POOLS]).storage_pools(conn) == ()


def _sample(conn: Any) -> Sample:
    reader = SampleReader(conn, DomainXMLCache(), list(bulk.GROUP_FLAGS), listings=[DOMAIN_FLAGS, STORAGE_POOLS])
    return Sampler(reader, SamplerOptions(min_interval_s=0.0)).snapshot().current


def _one_pool(monkeypatch) -> None:
    monkeypatch.setattr(fakelibvirt.FakeConn, "listAllStoragePools", lambda self, flags=0: [Pool("p")])


def _filtered_listings(monkeypatch, fn: Callable[[], Optional[int]]) -> List[int]:
    """Runs ``fn()`` before each filtered domain listing (autostart, persistent), which lists the
    first ``fn()`` domains (all when None; the fake knows no flags); returns their flags."""
    listed, calls = fakelibvirt.FakeConn.listAllDomains, []

    def filtered(self, flags=0):
        domains = listed(self, flags)
        if flags:
            calls.append(flags)
            return domains[:fn()]
        return domains

    monkeypatch.setattr(fakelibvirt.FakeConn, "listAllDomains", filtered)
    return calls


def test_a_failed_domain_listing_leaves_the_pools_standing(host: FakeHost, monkeypatch):
    def refuse() -> Optional[int]:
        raise libvirt_error(libvirt.VIR_ERR_INTERNAL_ERROR)

    _filtered_listings(monkeypatch, refuse)
    _one_pool(monkeypatch)
    with connected() as conn:
        sample = _sample(conn)
    assert sample.up and sample.autostart is None and sample.persistent is None
    assert [p.name for p in sample.storage_pools] == ["p"]
    assert sample.listings_error == "domain listings: scripted"


def _reader(conn: Any, closing: Callable[[], FrozenSet[str]] = frozenset) -> SampleReader:
    return SampleReader(conn, DomainXMLCache(), list(bulk.GROUP_FLAGS), listings=[DOMAIN_FLAGS, STORAGE_POOLS],
                        closing=closing)


def _read(reader: SampleReader, deadline_s: float) -> Sample:
    now = time.monotonic()
    return reader.read(now, time.time(), now + deadline_s)


def test_a_late_domain_listing_leaves_the_pools_and_the_last_listing_until_it_returns(host: FakeHost, monkeypatch):
    """Both listings go out together against the sample's one deadline: a domain listing that does not
    answer in time costs the pools nothing, and the last listing stands until the late one lands."""
    release, late = threading.Event(), threading.Event()

    def slow_while_late() -> Optional[int]:
        if late.is_set():
            release.wait(20)
            return 1
        return None

    calls = _filtered_listings(monkeypatch, slow_while_late)
    _one_pool(monkeypatch)
    with connected() as conn:
        reader = _reader(conn)
        everyone = frozenset(host.vms)
        assert _read(reader, 10.0).autostart == everyone
        listings = reader.listings
        assert listings is not None and listings.last_domain_flags == (everyone, everyone)
        late.set()
        sample = _read(reader, 2.0)
        assert sample.up and [p.name for p in sample.storage_pools] == ["p"]
        assert sample.autostart is None and sample.persistent is None
        assert sample.listings_error.startswith("domain listings: libvirt call did not answer within"), \
            sample.listings_error
        assert listings.last_domain_flags == (everyone, everyone)  # not cleared by a call in flight
        release.set()
        first = frozenset(sorted(host.vms)[:1])
        wait_for(lambda: listings.last_domain_flags == (first, first), 10, "the late listing landing")
        assert len(calls) == 4


def test_listings_are_not_sent_once_the_sample_deadline_is_too_near(host: FakeHost, monkeypatch):
    """The domain XML takes the whole deadline: the listings are not sent at all (a call sure to be
    abandoned would take a lane out of use)."""
    release = threading.Event()
    described = fakelibvirt.FakeDom.XMLDesc

    def stuck_xml(self, flags=0):
        release.wait(20)
        return described(self, flags)

    calls = _filtered_listings(monkeypatch, lambda: None)
    pools: List[int] = []
    monkeypatch.setattr(fakelibvirt.FakeConn, "listAllStoragePools", lambda self, flags=0: pools.append(flags) or [])
    monkeypatch.setattr(fakelibvirt.FakeDom, "XMLDesc", stuck_xml)
    with connected() as conn:
        try:
            sample = _read(_reader(conn), 1.0)
        finally:
            release.set()
    assert sample.up and sample.autostart is None and sample.storage_pools is None
    assert sample.listings_error == ("domain listings: not read, the sample's deadline was too near; "
                                     "storage pools: not read, the sample's deadline was too near")
    assert calls == [] and pools == []


def test_while_a_domain_closes_the_last_domain_listing_stands_without_a_call(host: FakeHost, monkeypatch):
    closing: List[FrozenSet[str]] = [frozenset()]
    calls = _filtered_listings(monkeypatch, lambda: 2 if closing[0] else None)
    with connected() as conn:
        reader = _reader(conn, closing=lambda: closing[0])
        first = _read(reader, 10.0)
        assert first.autostart == frozenset(host.vms) and len(calls) == 2
        closing[0] = frozenset(sorted(host.vms)[-1:])
        during = _read(reader, 10.0)
    assert len(calls) == 2 and during.listings_error == ""
    assert (during.autostart, during.persistent) == (first.autostart, first.persistent)


@pytest.mark.parametrize("listing", ["listAllStoragePools", "listAllDomains"])
def test_a_listing_that_finds_libvirtd_gone_reconnects(host: FakeHost, monkeypatch, listing: str):
    """A listing's libvirtError reaches the connection, which probes the lane and, the probe failing
    too, reconnects: a lost libvirtd is noticed through a listing as through any call."""
    lost = threading.Event()
    probe, listed = fakelibvirt.FakeConn.getLibVersion, getattr(fakelibvirt.FakeConn, listing)

    def on_a_lost_connection(self, flags=0):
        if listing == "listAllDomains" and not flags:
            return listed(self, flags)  # the domain XML's listing: only the filtered ones are lost
        lost.set()
        raise libvirt_error(libvirt.VIR_ERR_SYSTEM_ERROR)

    def probe_fails_once_lost(self):
        if lost.is_set():
            lost.clear()
            raise libvirt_error(libvirt.VIR_ERR_SYSTEM_ERROR)
        return probe(self)

    monkeypatch.setattr(fakelibvirt.FakeConn, listing, on_a_lost_connection)
    monkeypatch.setattr(fakelibvirt.FakeConn, "getLibVersion", probe_fails_once_lost)
    with connected() as conn:
        opened = host.opened
        sample = _sample(conn)
        if listing == "listAllStoragePools":
            assert sample.storage_pools is None and sample.listings_error == "storage pools: scripted"
            assert sample.autostart is not None
        else:
            assert sample.autostart is None and sample.listings_error == "domain listings: scripted"
            assert sample.storage_pools == ()
        wait_for(lambda: host.opened > opened, 10, "a new libvirt connection after the failed probe")


def test_failed_listing_keeps_the_sample_and_fails_only_the_pool_collector(host: FakeHost, monkeypatch):
    def refuse(self, flags=0):
        raise libvirt_error(libvirt.VIR_ERR_INTERNAL_ERROR)

    monkeypatch.setattr(fakelibvirt.FakeConn, "listAllStoragePools", refuse, raising=False)
    load_all()
    specs = [REGISTRY[n] for n in ("domain", "storage_pool")]
    with connected() as conn:
        xml_cache = DomainXMLCache()
        reader = SampleReader(conn, xml_cache, list(bulk.GROUP_FLAGS), listings=[DOMAIN_FLAGS, STORAGE_POOLS])
        sampler = Sampler(reader, SamplerOptions(min_interval_s=0.0), domain_info=xml_cache.snapshot)
        snapshot = sampler.snapshot()
        sample = snapshot.current
        assert sample.up and len(sample.domains) == 6
        assert sample.storage_pools is None and "storage pools: scripted" == sample.listings_error
        # The domain listings are read apart from the pools: they stand.
        assert sample.autostart is not None and sample.persistent is not None
        exporter = Exporter(sampler, specs, {"domain": {"metadata-label": ()}, "storage_pool": {}})
        families = {f.name: f for f in exporter.families(snapshot)}
        success = {s.labels["collector"]: s.value for s in families["libvirt_exporter_collector_success"].samples}
        assert success == {"domain": 1.0, "storage_pool": 0.0}
        assert len(families["libvirt_domain_state"].samples) == 6
        assert len(families["libvirt_domain_autostart"].samples) == 6
        assert len(families["libvirt_domain_persistent"].samples) == 6
        sampler.stop()
