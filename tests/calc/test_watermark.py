"""calc.watermark: vdsm's thin-provisioning rule, at its edges, and which layers qualify."""

from __future__ import annotations

import dataclasses
from typing import Optional, Tuple

import pytest

from virt_exporter.calc.watermark import (
    MIB,
    Layer,
    WatermarkPolicy,
    block_layers,
    chunked_layers,
    extension_needed,
    headroom_bytes,
    is_chunked,
    layer_is_chunked,
    max_volume_size_bytes,
    next_volume_size_bytes,
    round_up,
    threshold_for,
    watermark_limit_bytes,
)
from virt_exporter.sample import DiskInfo, DomainStats

GIB = 1024 * MIB


@dataclasses.dataclass(frozen=True)
class Backing:
    """Shape of a backing-chain entry as layer_is_chunked reads it (index, source_type, driver_type)."""

    index: int
    source_type: Optional[str]
    driver_type: Optional[str]


@dataclasses.dataclass(frozen=True)
class DiskWithChain:
    target: str
    device: str
    source_type: Optional[str]
    driver_type: Optional[str]
    backing: Tuple[Backing, ...] = ()


def disk(target="vda", device="disk", source_type="block", driver_type="qcow2", path="/dev/vg/lv") -> DiskInfo:
    return DiskInfo(target=target, device=device, source_type=source_type, path=path, bus="virtio",
                    driver_type=driver_type)


def layer(allocation=0, capacity=10 * GIB, physical=4 * GIB, threshold=None, backing_index=None,
          chain_index=1, target="vda") -> Layer:
    return Layer(target=target, backing_index=backing_index, chain_index=chain_index, path="/dev/vg/lv",
                 allocation_bytes=allocation, capacity_bytes=capacity, physical_bytes=physical,
                 threshold_bytes=threshold)


def test_default_limit_is_vdsm_2048_mib():
    assert WatermarkPolicy().limit_bytes == 2048 * MIB
    assert watermark_limit_bytes(2560 * MIB, 20) == 2048 * MIB
    assert watermark_limit_bytes(100 * MIB, 50) == 50 * MIB
    # vdsm floors: VOLWM_FREE_PCT * chunk // 100
    assert watermark_limit_bytes(MIB + 1, 1) == (99 * (MIB + 1)) // 100
    assert watermark_limit_bytes(10 * MIB, 100) == 0


def test_from_options_takes_mib():
    p = WatermarkPolicy.from_options(1024, 50)
    assert p.chunk_bytes == 1024 * MIB and p.limit_bytes == 512 * MIB


@pytest.mark.parametrize("chunk, util", [(MIB - 1, 20), (0, 20), (MIB, -1), (MIB, 101)])
def test_policy_rejects_nonsense(chunk, util):
    with pytest.raises(ValueError):
        WatermarkPolicy(chunk_bytes=chunk, utilization_percent=util)


def test_headroom_is_physical_minus_allocation_and_may_go_negative():
    assert headroom_bytes(8 * MIB, 3 * MIB) == 5 * MIB
    # measured: a write that failed with ENOSPC still moved allocation 64 KiB past the device end
    assert headroom_bytes(8388608, 8454144) == -65536


def test_extension_needed_edges():
    limit = 2048 * MIB
    physical = 4 * GIB
    cap = 10 * GIB
    # headroom == limit: not yet (strictly below)
    assert not extension_needed(physical - limit, cap, physical, limit)
    # one byte more written: needed
    assert extension_needed(physical - limit + 1, cap, physical, limit)
    assert not extension_needed(0, cap, physical, limit)
    # past the end (ENOSPC)
    assert extension_needed(physical + 65536, cap, physical, limit)


def test_no_extension_once_at_max_size():
    cap = 10 * GIB
    top = max_volume_size_bytes(cap)
    assert top == 11 * GIB  # exact: capacity x 1.1
    # just below max: the rule applies
    assert extension_needed(top - MIB, cap, top - 1, 2048 * MIB)
    # at or above max (LVs round up to whole extents): never, even when full
    assert not extension_needed(top, cap, top, 2048 * MIB)
    assert not extension_needed(top + 4 * MIB, cap, top + 4 * MIB, 2048 * MIB)


def test_max_size_rounds_up_to_mib_with_exact_arithmetic():
    assert max_volume_size_bytes(10 * MIB) == 11 * MIB
    assert max_volume_size_bytes(3 * MIB) == 4 * MIB  # 3.3 MiB rounded up
    assert max_volume_size_bytes(1) == MIB
    assert max_volume_size_bytes(1000 * MIB) == 1100 * MIB
    assert max_volume_size_bytes(1001 * MIB) == 1102 * MIB  # 1101.1 MiB rounded up
    assert round_up(0, MIB) == 0 and round_up(MIB, MIB) == MIB and round_up(MIB + 1, MIB) == 2 * MIB


def test_next_size_is_physical_plus_chunk_rounded_and_capped():
    chunk = 2560 * MIB
    assert next_volume_size_bytes(4 * GIB, 100 * GIB, chunk) == 4 * GIB + chunk
    # physical not a MiB multiple (a file, an odd device): rounded up
    assert next_volume_size_bytes(4 * GIB + 1, 100 * GIB, chunk) == 4 * GIB + chunk + MIB
    # capped at capacity x 1.1
    assert next_volume_size_bytes(10 * GIB, 10 * GIB, chunk) == 11 * GIB
    assert next_volume_size_bytes(11 * GIB, 10 * GIB, chunk) == 11 * GIB


def test_evaluate_combines_the_rule():
    p = WatermarkPolicy.from_options(64, 50)  # limit 32 MiB
    wm = p.evaluate(allocation_bytes=100 * MIB, capacity_bytes=GIB, physical_bytes=128 * MIB)
    assert wm.headroom_bytes == 28 * MIB
    assert wm.limit_bytes == 32 * MIB
    assert wm.extension_needed
    assert wm.next_size_bytes == 192 * MIB
    assert wm.threshold_bytes == 96 * MIB
    wm = p.evaluate(allocation_bytes=96 * MIB, capacity_bytes=GIB, physical_bytes=128 * MIB)
    assert wm.headroom_bytes == wm.limit_bytes and not wm.extension_needed


def test_threshold_for_edges():
    limit = 32 * MIB
    assert threshold_for(128 * MIB, GIB, limit) == 96 * MIB
    # storage no bigger than the limit: extension due at once, no threshold
    assert threshold_for(32 * MIB, GIB, limit) is None
    assert threshold_for(32 * MIB + 1, GIB, limit) == 1
    # at max size: vdsm extends no further, nothing to watch for
    assert threshold_for(max_volume_size_bytes(GIB), GIB, limit) is None


def test_threshold_to_arm():
    p = WatermarkPolicy.from_options(64, 50)  # limit 32 MiB
    assert p.threshold_to_arm(layer(allocation=10 * MIB, capacity=GIB, physical=128 * MIB)) == 96 * MIB
    # already armed there
    assert p.threshold_to_arm(layer(allocation=10 * MIB, capacity=GIB, physical=128 * MIB,
                                    threshold=96 * MIB)) is None
    # armed at a stale value (the storage grew): re-armed
    assert p.threshold_to_arm(layer(allocation=10 * MIB, capacity=GIB, physical=192 * MIB,
                                    threshold=96 * MIB)) == 160 * MIB
    # allocation at or past it: arming would fire on the next write without a crossing
    assert p.threshold_to_arm(layer(allocation=96 * MIB, capacity=GIB, physical=128 * MIB)) is None
    assert p.threshold_to_arm(layer(allocation=96 * MIB - 1, capacity=GIB, physical=128 * MIB)) == 96 * MIB
    # no sizes (a stuck domain's block group): nothing
    assert p.threshold_to_arm(layer(allocation=None)) is None


@pytest.mark.parametrize("device, source_type, driver_type, expected", [
    ("disk", "block", "qcow2", True),
    ("disk", "file", "qcow2", False),      # grows by itself on its filesystem
    ("disk", "block", "raw", False),       # raw on an LV is preallocated, nothing to extend
    ("disk", "network", "qcow2", False),
    ("disk", "volume", "qcow2", False),    # the XML names a pool, not the storage
    ("cdrom", "block", "qcow2", False),
    ("lun", "block", "qcow2", False),
    ("disk", None, None, False),
])
def test_is_chunked(device, source_type, driver_type, expected):
    assert is_chunked(device, source_type, driver_type) is expected


def stats(*entries, **extra):
    out = {"state.state": 1, "block.count": len(entries)}
    for i, e in enumerate(entries):
        for k, v in e.items():
            out["block.%d.%s" % (i, k)] = v
    out.update(extra)
    return DomainStats(uuid="u1", name="vm1", stats=out)


def test_block_layers_top_is_the_first_entry_of_a_name():
    dom = stats(
        {"name": "vda", "path": "/dev/loop3", "backingIndex": 3, "allocation": 5, "capacity": 10, "physical": 8,
         "threshold": 4},
        {"name": "vda", "path": "/dev/loop2", "backingIndex": 1, "allocation": 0, "capacity": 10, "physical": 8},
        {"name": "hdc", "path": ""},
    )
    top, base, cd = block_layers(dom)
    assert (top.target, top.backing_index, top.chain_index, top.device) == ("vda", None, 3, "vda[3]")
    assert top.threshold_bytes == 4 and top.sized
    assert (base.backing_index, base.device, base.threshold_bytes) == (1, "vda[1]", None)
    assert (cd.target, cd.sized, cd.device) == ("hdc", False, "hdc")


def test_threshold_zero_means_none_armed():
    (only,) = block_layers(stats({"name": "vda", "backingIndex": 1, "threshold": 0}))
    assert only.threshold_bytes is None


def test_layer_is_chunked_top_from_disk_info():
    disks = {"vda": disk(), "vdb": disk("vdb", source_type="file", path="/var/lib/x.qcow2"),
             "hdc": disk("hdc", device="cdrom", source_type="file", driver_type="raw", path="")}
    assert layer_is_chunked(layer(target="vda"), disks)
    assert not layer_is_chunked(layer(target="vdb"), disks)
    assert not layer_is_chunked(layer(target="hdc"), disks)
    assert not layer_is_chunked(layer(target="vdz"), disks)  # not in the XML (yet)


def test_backing_layer_needs_its_own_chain_entry():
    # DiskInfo without a chain: a backing layer is not judged by its top's format
    assert not layer_is_chunked(layer(backing_index=2, chain_index=2), {"vda": disk()})
    chained = DiskWithChain("vda", "disk", "block", "qcow2",
                            backing=(Backing(2, "block", "qcow2"), Backing(3, "block", "raw")))
    assert layer_is_chunked(layer(backing_index=2, chain_index=2), {"vda": chained})
    assert not layer_is_chunked(layer(backing_index=3, chain_index=3), {"vda": chained})
    assert not layer_is_chunked(layer(backing_index=4, chain_index=4), {"vda": chained})


def test_chunked_layers_skips_unsized_and_unqualified():
    dom = stats(
        {"name": "vda", "path": "/dev/loop3", "backingIndex": 1, "allocation": 5, "capacity": 10, "physical": 8},
        {"name": "vdb", "path": "/x.qcow2", "backingIndex": 1, "allocation": 5, "capacity": 10, "physical": 8},
        {"name": "vdc", "path": "/dev/loop4", "backingIndex": 1},  # sizes missing (stuck QEMU)
    )
    disks = {"vda": disk("vda"), "vdb": disk("vdb", source_type="file"), "vdc": disk("vdc")}
    assert list(chunked_layers(dom, disks)) == ["vda[1]"]
