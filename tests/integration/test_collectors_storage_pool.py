"""storage_pool collector against `virsh pool-info --bytes` for a directory pool and an LVM (logical)
pool on a loop device (and that one also against `vgs`), made by the test under names of its own and
removed even on failure.

This host's kernel has no device-mapper, so the logical pool holds no LV (lvcreate fails): its
allocation is 0. Allocation that moves is shown on the directory pool.
"""

from __future__ import annotations

import pytest

import testbed as tb
from exporterproc import ExporterProcess
from scrape import Samples

TEST_BOUND_S = 120
pytestmark = [pytest.mark.libvirt, pytest.mark.timeout(TEST_BOUND_S, func_only=True)]

SIZES = (("Capacity", "libvirt_storage_pool_capacity_bytes"),
         ("Allocation", "libvirt_storage_pool_allocation_bytes"),
         ("Available", "libvirt_storage_pool_available_bytes"))


@pytest.fixture(scope="module")
def pools(libvirtd):
    """{"dir": name, "logical": name}; the directory pool with one volume."""
    bed = tb.Testbed()
    made = []
    try:
        for kind in ("dir", "logical"):
            name, directory = tb.make_storage_pool(bed, kind)
            made.append((name, directory))
            if kind == "dir":
                tb.virsh("vol-create-as", name, "vol1", "8M", "--allocation", "8M", "--format", "raw")
            # The pool's sizes as of a refresh (virsh pool-info reads the same cached figures).
            tb.virsh("pool-refresh", name)
        yield {"dir": made[0][0], "logical": made[1][0]}
    finally:
        for name, directory in made:
            tb.remove_storage_pool(name, directory)
        bed.cleanup()


@pytest.fixture(scope="module")
def exporter(pools):
    # No domains needed: an include pattern that matches none keeps other tests' guests out.
    with ExporterProcess(["--libvirt.min-interval", "0", "--libvirt.domain-include", "^$"]) as exp:
        yield exp


def check_pool(samples: Samples, name: str, kind: str) -> None:
    info = tb.pool_info_bytes(name)
    labels = samples.series("libvirt_storage_pool_info", pool=name)
    assert len(labels) == 1, labels
    assert labels[0][0] == {"pool": name, "type": kind, "state": info["State"]}, (labels, info)
    for field, metric in SIZES:
        assert samples.get(metric, pool=name) == info[field], (name, field, samples.get(metric, pool=name), info)


@pytest.mark.parametrize("kind", ["dir", "logical"])
def test_pool_equals_virsh_pool_info(exporter, pools, kind):
    name = pools[kind]
    samples = exporter.scrape()
    check_pool(samples, name, kind)
    if kind == "dir":
        assert samples.get("libvirt_storage_pool_allocation_bytes", pool=name) > 0
    else:
        # The VG itself, as LVM reports it: its size and free space.
        size, free = tb.run(["vgs", "--noheadings", "--nosuffix", "--units", "b", "-o", "vg_size,vg_free",
                              name]).stdout.split()
        assert samples.get("libvirt_storage_pool_capacity_bytes", pool=name) == int(size)
        assert samples.get("libvirt_storage_pool_available_bytes", pool=name) == int(free)


def test_volume_created_through_libvirt_shows_on_the_next_scrape(exporter, pools):
    name = pools["dir"]
    before = exporter.scrape().get("libvirt_storage_pool_allocation_bytes", pool=name)
    tb.virsh("vol-create-as", name, "vol2", "4M", "--allocation", "4M", "--format", "raw")
    try:
        samples = exporter.scrape()
        check_pool(samples, name, "dir")
        assert samples.get("libvirt_storage_pool_allocation_bytes", pool=name) > before
    finally:
        tb.virsh("vol-delete", "--pool", name, "vol2")


def test_stopped_pool_keeps_its_info_series_and_loses_its_sizes(exporter, pools):
    name = pools["dir"]
    tb.virsh("pool-destroy", name)
    try:
        samples = exporter.scrape()
        assert tb.pool_info_bytes(name)["State"] == "inactive"
        assert samples.series("libvirt_storage_pool_info", pool=name, type="dir", state="inactive")
        for _field, metric in SIZES:
            assert samples.get(metric, pool=name) is None, metric
    finally:
        tb.virsh("pool-start", name)
    check_pool(exporter.scrape(), name, "dir")

