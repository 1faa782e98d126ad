"""Drive watermarks of thin volumes (vdsm's rule) and the block-threshold / I/O-error event counters.

The sizes themselves (allocation, capacity, physical of every layer) come from the ``block``
collector. This one adds, for chunked layers only — a qcow2 image straight on block storage
(``<disk type='block'>`` with ``<driver type='qcow2'>``: an LV, a LUN, a loop device), which nothing
grows by itself — headroom, the limit, whether vdsm would extend it now and to what size. A qcow2 file
on a filesystem grows with its writes (its physical size follows its allocation), so it never
qualifies; neither do raw images, network disks and CD-ROMs.

The event counters come from the block-events subsystem's snapshot (``ctx.block_events``; the
sampler hands that subsystem each sample to arm thresholds from); without it only the watermark
gauges are exported.
"""

from __future__ import annotations

import argparse
from typing import Dict, Iterable, Mapping, Optional, Tuple

from prometheus_client.metrics_core import Metric

from ..calc.watermark import (
    DEFAULT_CHUNK_MIB,
    DEFAULT_UTILIZATION_PERCENT,
    WatermarkPolicy,
    block_layers,
    layer_label,
    layer_watermark,
    top_indexes,
)
from .base import Background, Option, ScrapeContext, register
from .families import counter, gauge

QUALIFY = ("Only chunked volumes: qcow2 on block storage (an LV, LUN or loop device); a qcow2 file on a "
           "filesystem grows by itself and has no such value.")


def _chunk_mib(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("not an integer: %r" % text) from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be >= 1 MiB: %r" % text)
    return value


def _percent(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("not an integer: %r" % text) from None
    if not 0 <= value <= 100:
        raise argparse.ArgumentTypeError("must be 0..100: %r" % text)
    return value


def policy_from_options(options: Mapping[str, object]) -> WatermarkPolicy:
    chunk_mib = options.get("chunk-mib", DEFAULT_CHUNK_MIB)
    utilization_percent = options.get("utilization-percent", DEFAULT_UTILIZATION_PERCENT)
    if not isinstance(chunk_mib, int) or not isinstance(utilization_percent, int):
        raise TypeError("watermark options must be ints, got %r and %r" % (chunk_mib, utilization_percent))
    return WatermarkPolicy.from_options(chunk_mib, utilization_percent)


def arms_thresholds(enabled_collectors: Iterable[str], options: Mapping[str, Mapping[str, object]]) -> bool:
    """The one predicate for opening libvirt read-write: this collector is on and its threshold
    option is set. Everything else in the exporter works on a read-only connection."""
    return "watermark" in set(enabled_collectors) and bool(options.get("watermark", {}).get("threshold"))


@register("watermark", stats_groups=("block",), background=Background.BLOCK_EVENTS,
          help="thin-volume watermarks (vdsm's extension rule), block-threshold and I/O-error event counters",
          options=(
              Option("chunk-mib", _chunk_mib, DEFAULT_CHUNK_MIB,
                     "extension chunk of a thin volume, MiB (vdsm volume_utilization_chunk_mb)"),
              Option("utilization-percent", _percent, DEFAULT_UTILIZATION_PERCENT,
                     "extend when free space falls under chunk x (100 - this) / 100 (vdsm "
                     "volume_utilization_percent)"),
              Option("threshold", bool, False,
                     "set a write threshold (physical - limit) on every chunked volume and re-arm it after "
                     "each event; opens the libvirt connection read-write (default: read-only, no write "
                     "call)"),
          ))
def collect(ctx: ScrapeContext) -> Iterable[Metric]:
    policy = policy_from_options(ctx.options)
    layer_labels = ["domain", "target", "backing_index"]
    headroom = gauge("libvirt_domain_block_watermark_headroom_bytes",
                     "Free space of a thin volume: physical - allocation, bytes (negative after a write "
                     "past its end). " + QUALIFY, layer_labels)
    limit = gauge("libvirt_domain_block_watermark_limit_bytes",
                  "Headroom under which the volume needs extending: chunk x (100 - utilization%) / 100, "
                  "bytes (vdsm). " + QUALIFY, layer_labels)
    needed = gauge("libvirt_domain_block_extension_needed",
                   "1 when headroom < limit and physical is below capacity x 1.1 (vdsm would extend the "
                   "volume now), else 0. " + QUALIFY, layer_labels)
    next_size = gauge("libvirt_domain_block_watermark_next_size_bytes",
                      "Size vdsm would extend the volume to: physical + chunk rounded up to MiB, at most "
                      "capacity x 1.1, bytes. " + QUALIFY, layer_labels)
    threshold = gauge("libvirt_domain_block_threshold_bytes",
                      "Write threshold armed on the layer now (setBlockThreshold, by this exporter with "
                      "--collector.watermark.threshold or by another client), bytes; absent when none.",
                      layer_labels)
    events = counter("libvirt_domain_block_threshold_events_total",
                     "BLOCK_THRESHOLD events: writes that went past an armed write threshold (one-shot, "
                     "so one per crossing). Zero for every thin volume before its first event.",
                     layer_labels)
    io_errors = counter("libvirt_domain_block_io_errors_total",
                        "IO_ERROR_REASON events per disk; reason 'enospc' (the storage is full: the "
                        "guest pauses, libvirt_domain_state 3 with libvirt_domain_state_reason 5) or "
                        "'unspecified'. enospc is 0 for every disk before its first error.",
                        ["domain", "target", "reason"])
    counts = ctx.block_events
    thr_events: Dict[Tuple[str, str, Optional[int]], int] = {}
    if counts is not None:
        # Per sample, not per event: which index is the top is known only now.
        for (uuid, target, index), n in counts.threshold_events.items():
            dom = ctx.current.domains.get(uuid)
            if dom is None:
                continue
            key = (uuid, target, layer_label(index, top_indexes(dom).get(target)))
            thr_events[key] = thr_events.get(key, 0) + n
    io_by_target = _io_errors_by_target(ctx, counts.io_errors if counts is not None else {})

    for uuid, dom in ctx.current.domains.items():
        if "block.count" not in dom.stats:
            continue
        meta = ctx.domain_info.get(uuid)
        disks = {d.target: d for d in meta.disks} if meta is not None else {}
        for layer in block_layers(dom):
            labels = [dom.name, layer.target] + ([] if layer.backing_index is None else [str(layer.backing_index)])
            if layer.threshold_bytes is not None:
                threshold.add_metric(labels, layer.threshold_bytes)
            wm = layer_watermark(policy, layer, disks)
            if wm is not None:
                headroom.add_metric(labels, wm.headroom_bytes)
                limit.add_metric(labels, wm.limit_bytes)
                needed.add_metric(labels, 1 if wm.extension_needed else 0)
                next_size.add_metric(labels, wm.next_size_bytes)
                if counts is not None:
                    thr_events.setdefault((uuid, layer.target, layer.backing_index), 0)
        if counts is not None:
            for disk in disks.values():
                if disk.device == "disk":
                    io_by_target.setdefault((uuid, disk.target, "enospc"), 0)

    names = {uuid: dom.name for uuid, dom in ctx.current.domains.items()}
    for (uuid, target, backing_index), n in sorted(thr_events.items(), key=_sort_key):
        events.add_metric([names[uuid], target] + ([] if backing_index is None else [str(backing_index)]), n)
    for (uuid, target, reason), n in sorted(io_by_target.items()):
        if uuid in names:
            io_errors.add_metric([names[uuid], target, reason], n)

    yield from (headroom, limit, needed, next_size, threshold)
    if counts is not None:
        yield events
        yield io_errors
        arm_errors = counter("libvirt_exporter_block_threshold_errors_total",
                             "setBlockThreshold calls that failed (read-only connection, unknown disk, "
                             "libvirt busy); each layer is retried after a minute.", [])
        arm_errors.add_metric([], counts.arm_errors_total)
        yield arm_errors


def _sort_key(item: Tuple[Tuple[str, str, Optional[int]], int]) -> Tuple[str, str, int]:
    (uuid, target, backing_index), _n = item
    return uuid, target, -1 if backing_index is None else backing_index


def _io_errors_by_target(ctx: ScrapeContext, raw: Mapping[Tuple[str, str, str, str], int]
                         ) -> Dict[Tuple[str, str, str], int]:
    """(uuid, target, reason) → count: the event's source path (or device alias) matched to a disk of
    the domain's XML; the alias itself stands in when nothing matches (a network disk has no path)."""
    out: Dict[Tuple[str, str, str], int] = {}
    for (uuid, path, alias, reason), n in raw.items():
        meta = ctx.domain_info.get(uuid)
        disks = meta.disks if meta is not None else ()
        target = next((d.target for d in disks if path and d.path == path), None)
        if target is None:
            target = next((d.target for d in disks if alias and d.alias == alias), None)
        key = (uuid, target or alias or path, reason)
        out[key] = out.get(key, 0) + n
    return out
