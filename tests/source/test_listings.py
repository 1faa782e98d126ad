"""source.listings and its place in a sample: pool types read once per pool, a pool undefined between
the list and the info call, and a failed listing that leaves the sample (and every other collector)
standing while the storage_pool collector reports its failure."""

from __future__ import annotations

import threading
from typing import Any, List

import libvirt
import pytest

import fakelibvirt
from bounds import wait_for
from fakelibvirt import FakeHost, connected
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


def libvirt_error(code: int) -> libvirt.libvirtError:
    e = libvirt.libvirtError("scripted")
    e.err = (code, 0, "scripted", 0, "", "", "", 0, 0)
    return e


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


def test_domain_flags_are_two_filtered_list_calls_and_stand_while_domains_cannot_be_listed():
    conn = Conn([])
    reader = ListingReader([DOMAIN_FLAGS])
    assert reader.domain_flags(conn, domains_listable=False) is None  # nothing read yet
    assert reader.domain_flags(conn) == (frozenset(), frozenset())
    assert sorted(conn.list_flags) == sorted([libvirt.VIR_CONNECT_LIST_DOMAINS_AUTOSTART,
                                              libvirt.VIR_CONNECT_LIST_DOMAINS_PERSISTENT])
    assert reader.domain_flags(conn, domains_listable=False) == (frozenset(), frozenset())
    assert len(conn.list_flags) == 2  # the last listings, without a call


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


def test_a_failed_domain_listing_leaves_the_pools_standing(host: FakeHost, monkeypatch):
    listed = fakelibvirt.FakeConn.listAllDomains

    def refuse_filtered(self, flags=0):
        if flags:
            raise libvirt_error(libvirt.VIR_ERR_INTERNAL_ERROR)
        return listed(self, flags)

    monkeypatch.setattr(fakelibvirt.FakeConn, "listAllDomains", refuse_filtered)
    with connected() as conn:
        sample = _sample(conn)
    assert sample.up and sample.autostart is None and sample.persistent is None
    assert sample.storage_pools == () and sample.listings_error == "domain listings: scripted"


def test_a_listing_that_finds_libvirtd_gone_reconnects(host: FakeHost, monkeypatch):
    """A listing's libvirtError reaches the connection, which probes the lane and, the probe failing
    too, reconnects: a lost libvirtd is noticed through a listing as through any call."""
    lost = threading.Event()
    probe = fakelibvirt.FakeConn.getLibVersion

    def pools_on_a_lost_connection(self, flags=0):
        lost.set()
        raise libvirt_error(libvirt.VIR_ERR_SYSTEM_ERROR)

    def probe_fails_once_lost(self):
        if lost.is_set():
            lost.clear()
            raise libvirt_error(libvirt.VIR_ERR_SYSTEM_ERROR)
        return probe(self)

    monkeypatch.setattr(fakelibvirt.FakeConn, "listAllStoragePools", pools_on_a_lost_connection, raising=False)
    monkeypatch.setattr(fakelibvirt.FakeConn, "getLibVersion", probe_fails_once_lost)
    with connected() as conn:
        opened = host.opened
        sample = _sample(conn)
        assert sample.storage_pools is None and sample.listings_error == "storage pools: scripted"
        assert sample.autostart is not None
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
