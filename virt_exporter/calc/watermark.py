"""Drive watermarks: vdsm's thin-provisioning rule as pure functions over one sample's block stats.

vdsm (``Drive.watermarkLimit`` / ``getNextVolumeSize`` / ``VM._should_extend_volume``) extends a thin
volume by one chunk when its free space falls under a limit:

    headroom = physical − allocation
    limit    = chunk × (100 − utilization%) / 100        (VOLWM_FREE_PCT; 2560 MiB, 20 % → 2048 MiB)
    extend   ⇔ headroom < limit and physical < max size
    next     = round_up(physical + chunk, MiB), at most max size
    max size = round_up(capacity × 1.1, MiB)              (VOLWM_COW_OVERHEAD: qcow2 metadata room)

Only "chunked" volumes take part: a qcow2 image written straight onto block storage (an LV, a LUN, a
loop device). Nothing grows such a device by itself, so someone has to extend it before QEMU writes
past its end. A qcow2 *file* on a filesystem grows as it is written (the filesystem allocates), its
``physical`` is the file's own size and follows ``allocation``: headroom there is always ~0 and says
nothing. Raw images, network disks and CD-ROMs are not chunked either.

``allocation`` is QEMU's highest written offset of the layer's storage (``wr_highest_offset``), 0 when
QEMU starts and moved only by guest writes; it can exceed ``physical`` by the write that failed with
ENOSPC, so headroom may be negative.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, List, Mapping, Optional, Union

from ..sample import DiskInfo, DomainStats, block_layers_with_top

MIB = 1024 * 1024
DEFAULT_CHUNK_MIB = 2560            # vdsm irs.volume_utilization_chunk_mb
DEFAULT_UTILIZATION_PERCENT = 20    # vdsm irs.volume_utilization_percent
# vdsm VOLWM_COW_OVERHEAD = 1.1, as a ratio so that the cap is exact integer arithmetic.
COW_OVERHEAD_NUM, COW_OVERHEAD_DEN = 11, 10


def round_up(value: int, multiple: int) -> int:
    """The smallest multiple of ``multiple`` that is >= value (vdsm ``utils.round``)."""
    return -(-value // multiple) * multiple


def watermark_limit_bytes(chunk_bytes: int, utilization_percent: int) -> int:
    """Free space under which a chunked volume needs extending: chunk × (100 − utilization) / 100."""
    return (100 - utilization_percent) * chunk_bytes // 100


def headroom_bytes(physical_bytes: int, allocation_bytes: int) -> int:
    """physical − allocation; negative once a write went past the end of the storage."""
    return physical_bytes - allocation_bytes


def max_volume_size_bytes(capacity_bytes: int) -> int:
    """The largest a chunked qcow2 volume is ever extended to: capacity × 1.1 rounded up to MiB."""
    return round_up(-(-capacity_bytes * COW_OVERHEAD_NUM // COW_OVERHEAD_DEN), MIB)


def next_volume_size_bytes(physical_bytes: int, capacity_bytes: int, chunk_bytes: int) -> int:
    """The size vdsm would extend to: physical + chunk rounded up to MiB, capped at the max size."""
    return min(round_up(physical_bytes + chunk_bytes, MIB), max_volume_size_bytes(capacity_bytes))


def extension_needed(allocation_bytes: int, capacity_bytes: int, physical_bytes: int, limit_bytes: int) -> bool:
    """vdsm's rule: headroom below the limit, unless the volume already reached its max size
    (physical may pass it a little: LVs are rounded up to whole extents)."""
    if physical_bytes >= max_volume_size_bytes(capacity_bytes):
        return False
    return headroom_bytes(physical_bytes, allocation_bytes) < limit_bytes


def is_chunked(device: Optional[str], source_type: Optional[str], driver_type: Optional[str]) -> bool:
    """vdsm's ``Drive.chunked``: a qcow2 disk on block storage (``<disk type='block'>``).

    ``type='volume'`` disks name a storage-pool volume, not the storage: the XML does not say
    whether it is an LV or a file, so they do not qualify.
    """
    return device in (None, "disk") and source_type == "block" and driver_type == "qcow2"


@dataclasses.dataclass(frozen=True)
class Layer:
    """One ``block.N`` entry of a bulk stats call made with the BACKING flag.

    ``backing_index`` is None for a disk's top layer (the metric label convention); ``chain_index``
    is libvirt's index of this layer (the top has one too, e.g. 1), the N that ``vda[N]`` names in
    setBlockThreshold and in block-threshold events.
    """

    target: str
    backing_index: Optional[int]
    chain_index: Optional[int]
    path: str
    allocation_bytes: Optional[int]
    capacity_bytes: Optional[int]
    physical_bytes: Optional[int]
    threshold_bytes: Optional[int]  # block.N.threshold: the write threshold armed now, if any

    @property
    def device(self) -> str:
        """The name setBlockThreshold takes for this layer: ``vda[N]``, or ``vda`` without an index."""
        if self.chain_index is None:
            return self.target
        return "%s[%d]" % (self.target, self.chain_index)

    @property
    def sized(self) -> bool:
        return None not in (self.allocation_bytes, self.capacity_bytes, self.physical_bytes)


def _int(value: Optional[Union[int, str]]) -> Optional[int]:
    return None if value is None else int(value)


def block_layers(dom: DomainStats) -> List[Layer]:
    """Every layer of every disk, in libvirt's order (sample.block_layers_with_top says which is top)."""
    out = []
    for dev, top in block_layers_with_top(dom.stats):
        target = str(dev["name"])
        chain_index = _int(dev.get("backingIndex"))
        threshold = _int(dev.get("threshold"))
        out.append(Layer(
            target=target,
            backing_index=None if top else chain_index,
            chain_index=chain_index,
            path=str(dev.get("path", "")),
            allocation_bytes=_int(dev.get("allocation")),
            capacity_bytes=_int(dev.get("capacity")),
            physical_bytes=_int(dev.get("physical")),
            threshold_bytes=threshold if threshold else None,  # 0 means "none armed"
        ))
    return out


def layer_is_chunked(layer: Layer, disks: Mapping[str, DiskInfo]) -> bool:
    """Whether this layer is a chunked volume, from the parsed domain XML (``DiskInfo`` by target).

    The top layer is judged by the disk's own type and format. A backing layer needs its own type and
    format, which only the XML's ``<backingStore>`` chain has (``disk.backing``); a backing layer the
    chain does not describe does not qualify — no value beats a guessed one.
    """
    disk = disks.get(layer.target)
    if disk is None:
        return False
    if layer.backing_index is None:
        return is_chunked(disk.device, disk.source_type, disk.driver_type)
    if disk.device not in (None, "disk"):
        return False
    for backing in disk.backing:
        if backing.index == layer.backing_index:
            return is_chunked(None, backing.source_type, backing.driver_type)
    return False


@dataclasses.dataclass(frozen=True)
class WatermarkPolicy:
    """The chunk and utilization flags (vdsm's ``volume_utilization_chunk_mb`` / ``_percent``)."""

    chunk_bytes: int = DEFAULT_CHUNK_MIB * MIB
    utilization_percent: int = DEFAULT_UTILIZATION_PERCENT

    def __post_init__(self) -> None:
        if self.chunk_bytes < MIB:
            raise ValueError("chunk must be at least 1 MiB, got %d bytes" % self.chunk_bytes)
        if not 0 <= self.utilization_percent <= 100:
            raise ValueError("utilization must be 0..100 %%, got %r" % self.utilization_percent)

    @classmethod
    def from_options(cls, chunk_mib: int, utilization_percent: int) -> "WatermarkPolicy":
        return cls(chunk_bytes=int(chunk_mib) * MIB, utilization_percent=int(utilization_percent))

    @property
    def limit_bytes(self) -> int:
        return watermark_limit_bytes(self.chunk_bytes, self.utilization_percent)

    def evaluate(self, allocation_bytes: int, capacity_bytes: int, physical_bytes: int) -> "Watermark":
        limit = self.limit_bytes
        return Watermark(
            headroom_bytes=headroom_bytes(physical_bytes, allocation_bytes),
            limit_bytes=limit,
            extension_needed=extension_needed(allocation_bytes, capacity_bytes, physical_bytes, limit),
            next_size_bytes=next_volume_size_bytes(physical_bytes, capacity_bytes, self.chunk_bytes),
            threshold_bytes=threshold_for(physical_bytes, capacity_bytes, limit),
        )

    def threshold_to_arm(self, layer: Layer) -> Optional[int]:
        """The write threshold to set on a chunked layer now, or None when none should be set.

        The threshold is physical − limit (vdsm sets it so, and again after every extension). None when
        it is already armed at that value, and None when allocation is already at or past it: QEMU
        fires on any write ending beyond the threshold, so arming under the watermark would fire on the
        next write without a crossing (measured) — the layer is re-armed once its storage has grown.
        """
        if not layer.sized:
            return None
        assert layer.allocation_bytes is not None and layer.capacity_bytes is not None
        assert layer.physical_bytes is not None
        threshold = threshold_for(layer.physical_bytes, layer.capacity_bytes, self.limit_bytes)
        if threshold is None or threshold <= layer.allocation_bytes or threshold == layer.threshold_bytes:
            return None
        return threshold


def threshold_for(physical_bytes: int, capacity_bytes: int, limit_bytes: int) -> Optional[int]:
    """physical − limit, or None where no threshold makes sense: storage smaller than the limit
    (extension is due at once), or a volume at its max size (vdsm extends it no further)."""
    if physical_bytes >= max_volume_size_bytes(capacity_bytes):
        return None
    threshold = physical_bytes - limit_bytes
    return threshold if threshold > 0 else None


@dataclasses.dataclass(frozen=True)
class Watermark:
    """What the rule says about one chunked layer."""

    headroom_bytes: int
    limit_bytes: int
    extension_needed: bool
    next_size_bytes: int
    threshold_bytes: Optional[int]  # physical − limit where a write threshold belongs


def layer_watermark(policy: WatermarkPolicy, layer: Layer, disks: Mapping[str, DiskInfo]) -> Optional[Watermark]:
    """The rule's verdict on a layer, or None for a layer that is not a sized chunked volume."""
    if not (layer.sized and layer_is_chunked(layer, disks)):
        return None
    assert layer.allocation_bytes is not None and layer.capacity_bytes is not None
    assert layer.physical_bytes is not None
    return policy.evaluate(layer.allocation_bytes, layer.capacity_bytes, layer.physical_bytes)


def chunked_layers(dom: DomainStats, disks: Mapping[str, DiskInfo]) -> Dict[str, Layer]:
    """The chunked, sized layers of a domain by ``device`` name (``vda[1]``…)."""
    return {layer.device: layer for layer in block_layers(dom)
            if layer.sized and layer_is_chunked(layer, disks)}


def thresholds_due(policy: WatermarkPolicy, dom: DomainStats, disks: Mapping[str, DiskInfo]) -> Dict[str, int]:
    """device → the write threshold to set now, for every chunked layer of the domain that needs one."""
    out: Dict[str, int] = {}
    for device, layer in chunked_layers(dom, disks).items():
        threshold = policy.threshold_to_arm(layer)
        if threshold is not None:
            out[device] = threshold
    return out


def top_indexes(dom: DomainStats) -> Dict[str, Optional[int]]:
    """target → libvirt's chain index of the disk's top layer in this sample."""
    out: Dict[str, Optional[int]] = {}
    for layer in block_layers(dom):
        if layer.backing_index is None:
            out[layer.target] = layer.chain_index
    return out


def layer_label(target_index: Optional[int], top_index: Optional[int]) -> Optional[int]:
    """The ``backing_index`` label of an event's layer: None (top) when the event named just the disk
    or the top's own index."""
    if target_index is None or target_index == top_index:
        return None
    return target_index

