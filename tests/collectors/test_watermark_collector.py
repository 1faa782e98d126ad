"""collectors.watermark: which layers get watermark values, labels, and the event counters' mapping."""

from __future__ import annotations

import libvirt
import pytest

from samples import sample
from virt_exporter import cli
from virt_exporter.calc.watermark import MIB
from virt_exporter.collectors import load_all, watermark
from virt_exporter.collectors.base import ScrapeContext
from virt_exporter.options import UsageError
from virt_exporter.sample import DomainStats
from virt_exporter.source.block_events import BlockEvents
from virt_exporter.source.domxml import parse_domain_xml

UUID = "11111111-2222-3333-4444-555555555555"
GIB = 1024 * MIB

XML = f"""<domain type='kvm'><name>vm1</name><uuid>{UUID}</uuid><memory>65536</memory><vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os><devices>
    <disk type='block' device='disk'><driver name='qemu' type='qcow2'/><source dev='/dev/loop7'/>
      <target dev='vda' bus='virtio'/></disk>
    <disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='/img/b.qcow2'/>
      <target dev='vdb' bus='virtio'/></disk>
    <disk type='network' device='disk'><driver name='qemu' type='raw'/>
      <source protocol='nbd' name='x'><host name='127.0.0.1' port='10809'/></source>
      <target dev='vdc' bus='virtio'/></disk>
    <disk type='file' device='cdrom'><driver name='qemu' type='raw'/><target dev='hdc' bus='ide'/></disk>
  </devices></domain>"""

STATS = {
    "state.state": 1, "state.reason": 1, "block.count": 5,
    # vda: thin qcow2 on a block device, with a backing layer below it
    "block.0.name": "vda", "block.0.path": "/dev/loop7", "block.0.backingIndex": 3,
    "block.0.allocation": 100 * MIB, "block.0.capacity": GIB, "block.0.physical": 128 * MIB,
    "block.0.threshold": 96 * MIB,
    "block.1.name": "vda", "block.1.path": "/dev/loop6", "block.1.backingIndex": 1,
    "block.1.allocation": 0, "block.1.capacity": GIB, "block.1.physical": 64 * MIB,
    # vdb: qcow2 file
    "block.2.name": "vdb", "block.2.path": "/img/b.qcow2", "block.2.backingIndex": 1,
    "block.2.allocation": 200 * MIB, "block.2.capacity": GIB, "block.2.physical": 200 * MIB,
    # vdc: network disk, no sizes that mean anything here; hdc: empty CD-ROM
    "block.3.name": "vdc", "block.3.allocation": 0, "block.3.capacity": GIB, "block.3.physical": 0,
    "block.4.name": "hdc",
}


def collect(options=None, events=None, stats=STATS):
    current = sample(domains=[DomainStats(uuid=UUID, name="vm1", stats=stats)])
    ctx = ScrapeContext(current=current, previous=None, domain_info={UUID: parse_domain_xml(XML)},
                        options={"chunk-mib": 64, "utilization-percent": 50} if options is None else options,
                        block_events=events.snapshot() if events is not None else None)
    out = {}
    for fam in watermark.collect(ctx):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def lbl(**kw):
    return tuple(sorted(kw.items()))


def test_only_the_thin_block_top_layer_gets_watermark_values():
    m = collect()
    top = lbl(domain="vm1", target="vda")
    assert m[("libvirt_domain_block_watermark_headroom_bytes", top)] == 28 * MIB
    assert m[("libvirt_domain_block_watermark_limit_bytes", top)] == 32 * MIB
    assert m[("libvirt_domain_block_extension_needed", top)] == 1
    assert m[("libvirt_domain_block_watermark_next_size_bytes", top)] == 192 * MIB
    assert m[("libvirt_domain_block_threshold_bytes", top)] == 96 * MIB
    wm_series = {k for k in m if k[0].startswith(("libvirt_domain_block_watermark", "libvirt_domain_block_ext"))}
    # file qcow2, network disk, CD-ROM, and (without a chain in DiskInfo) the backing layer: nothing
    assert {dict(k[1])["target"] for k in wm_series} == {"vda"}
    assert all("backing_index" not in dict(k[1]) for k in wm_series)
    # no events source wired: no counters
    assert not any(k[0].endswith("_total") for k in m)


def test_default_options_are_vdsm_defaults():
    m = collect(options={})
    assert m[("libvirt_domain_block_watermark_limit_bytes", lbl(domain="vm1", target="vda"))] == 2048 * MIB
    # 128 MiB of storage is under vdsm's 2 GiB limit: extension needed
    assert m[("libvirt_domain_block_extension_needed", lbl(domain="vm1", target="vda"))] == 1


def test_headroom_equal_to_limit_is_not_yet_needed():
    stats = dict(STATS, **{"block.0.allocation": 96 * MIB})
    m = collect(stats=stats)
    assert m[("libvirt_domain_block_extension_needed", lbl(domain="vm1", target="vda"))] == 0
    stats["block.0.allocation"] = 96 * MIB + 1
    m = collect(stats=stats)
    assert m[("libvirt_domain_block_extension_needed", lbl(domain="vm1", target="vda"))] == 1


class _Dom:
    def UUIDString(self):
        return UUID

    def name(self):
        return "vm1"



def test_counters_map_layers_and_disks_and_start_at_zero():
    events = BlockEvents(None, None, arm_thresholds=False)
    dom = _Dom()
    events.on_block_threshold(None, dom, "vda", "/dev/loop7", 96 * MIB, 65536)
    events.on_block_threshold(None, dom, "vda[3]", "/dev/loop7", 96 * MIB, 65536)  # the pair's twin
    events.on_block_threshold(None, dom, "vda[1]", "/dev/loop6", 10 * MIB, 512)    # the backing layer
    events.on_io_error(None, dom, "/dev/loop7", "virtio-disk0", libvirt.VIR_DOMAIN_EVENT_IO_ERROR_PAUSE, "enospc")
    events.on_io_error(None, dom, "", "virtio-disk2", libvirt.VIR_DOMAIN_EVENT_IO_ERROR_REPORT, "")
    m = collect(events=events)
    assert m[("libvirt_domain_block_threshold_events_total", lbl(domain="vm1", target="vda"))] == 1
    assert m[("libvirt_domain_block_threshold_events_total",
              lbl(domain="vm1", target="vda", backing_index="1"))] == 1
    io = {k[1]: v for k, v in m.items() if k[0] == "libvirt_domain_block_io_errors_total"}
    assert io == {
        lbl(domain="vm1", target="vda", reason="enospc"): 1,
        lbl(domain="vm1", target="vdb", reason="enospc"): 0,
        lbl(domain="vm1", target="vdc", reason="enospc"): 0,
        # no path: the alias stands in for the target
        lbl(domain="vm1", target="virtio-disk2", reason="unspecified"): 1,
    }
    assert m[("libvirt_exporter_block_threshold_errors_total", ())] == 0


def test_zero_threshold_counter_for_every_thin_layer_before_any_event():
    events = BlockEvents(None, None, arm_thresholds=False)
    m = collect(events=events)
    thr = {k[1]: v for k, v in m.items() if k[0] == "libvirt_domain_block_threshold_events_total"}
    assert thr == {lbl(domain="vm1", target="vda"): 0}


def test_read_write_predicate():
    on = {"watermark": {"threshold": True}}
    assert watermark.arms_thresholds(["block", "watermark"], on)
    assert not watermark.arms_thresholds(["block"], on)
    assert not watermark.arms_thresholds(["watermark"], {"watermark": {"threshold": False}})
    assert not watermark.arms_thresholds(["watermark"], {})


@pytest.mark.parametrize("flag, text", [("chunk-mib", "0"), ("chunk-mib", "x"),
                                        ("utilization-percent", "101"), ("utilization-percent", "-1")])
def test_option_values_are_checked_at_start_up(flag, text):
    load_all()
    parser = cli.build_parser()
    parser.parse_args(["--collector.watermark." + flag, "50"])  # a good value passes
    with pytest.raises(UsageError, match="--collector.watermark." + flag):
        parser.parse_args(["--collector.watermark." + flag, text])
