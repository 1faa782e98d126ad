"""Devices that have broken other exporters: two user-mode interfaces (no host device name, no net.*
stats), an empty CD-ROM (a disk without a source), two interfaces on one bridge, and a disk and NIC
hot-plugged and then unplugged. The whole scrape (every domain on the host, not only ours) stays
valid: no series twice, promtool check metrics clean, and our guest's devices as virsh shows them.
"""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from typing import List

import pytest

import testbed as tb
from exporterproc import ExporterProcess
from promtool import check_metrics
from scrape import Samples, duplicates

TEST_BOUND_S = 150
pytestmark = [pytest.mark.libvirt, pytest.mark.timeout(TEST_BOUND_S, func_only=True)]
EVENT_GRACE_S = 0.5


@pytest.fixture(scope="module")
def bridge(libvirtd):
    bed = tb.Testbed()
    name = tb.make_bridge(bed)
    try:
        yield bed, name
    finally:
        try:
            bed.cleanup()
        finally:
            tb.delete_bridge(name)


@pytest.fixture(scope="module")
def guest(bridge):
    bed, br = bridge
    extra = ("<interface type='user'><model type='virtio'/></interface>"
             "<interface type='user'><model type='e1000'/></interface>"
             "<disk type='file' device='cdrom'><driver name='qemu' type='raw'/>"
             "<target dev='sdy' bus='scsi'/><readonly/></disk>"
             f"<interface type='bridge'><source bridge='{br}'/><model type='virtio'/></interface>"
             f"<interface type='bridge'><source bridge='{br}'/><model type='virtio'/></interface>")
    return bed.make_guest("idle", extra_devices=extra)


@pytest.fixture(scope="module")
def exporter(guest):
    # Every collector that reads devices, and no domain filter: the whole host's scrape is checked.
    with ExporterProcess(["--libvirt.min-interval", "0", "--libvirt.timeout", "20", "--collector.iothread"]) as exp:
        yield exp


def check_whole_scrape(exp: ExporterProcess) -> Samples:
    text = exp.scrape_text()
    dup = duplicates(text)
    assert not dup, "series exported twice:\n  " + "\n  ".join(dup)
    check_metrics(text)
    return Samples.parse(text)


def xml_interfaces(xml: str) -> List[dict]:
    out = []
    for iface in ET.fromstring(xml).iterfind("devices/interface"):
        target = iface.find("target")
        src = iface.find("source")
        out.append({"type": iface.get("type"), "mac": iface.find("mac").get("address"),
                    "dev": target.get("dev") if target is not None else "",
                    "source": (src.get("bridge") or "") if src is not None else ""})
    return out


def test_unusual_devices_give_a_valid_scrape_without_duplicates(exporter, guest, bridge):
    _bed, br = bridge
    samples = check_whole_scrape(exporter)
    ifaces = xml_interfaces(guest.live_xml())
    assert sum(1 for i in ifaces if i["type"] == "user" and not i["dev"]) == 2, ifaces
    on_bridge = [i for i in ifaces if i["source"] == br]
    assert len(on_bridge) == 2 and on_bridge[0]["dev"] != on_bridge[1]["dev"], on_bridge
    # Each interface with a host device: one info series with its MAC and the same counters as virsh.
    stats = guest.domstats("net")
    names = {str(stats["net.%d.name" % i]) for i in range(int(stats["net.count"])) if "net.%d.name" % i in stats}
    with_dev = {i["dev"]: i for i in ifaces if i["dev"]}
    assert names == set(with_dev), (names, with_dev)
    info = {lab["interface"]: lab for lab, _v in samples.series("libvirt_domain_interface_info", domain=guest.name)}
    assert set(info) == set(with_dev), "interface_info %s, want the interfaces with a host device %s" % (
        sorted(info), sorted(with_dev))
    for dev in on_bridge:
        assert info[dev["dev"]]["source"] == br and info[dev["dev"]]["mac"] == dev["mac"]
    # The empty CD-ROM: one block_info series, no path.
    cdrom = samples.series("libvirt_domain_block_info", domain=guest.name, target="sdy")
    assert len(cdrom) == 1 and cdrom[0][0]["path"] == "" and cdrom[0][0]["device"] == "cdrom", cdrom


def test_hotplug_and_unplug_leave_no_series_behind(exporter, guest):
    target = guest.attach_disk()
    tap, mac = guest.attach_interface()
    try:
        time.sleep(EVENT_GRACE_S)
        samples = check_whole_scrape(exporter)
        assert samples.series("libvirt_domain_block_info", domain=guest.name, target=target)
        assert samples.series("libvirt_domain_interface_info", domain=guest.name, interface=tap, mac=mac)
    finally:
        guest.detach_disk(target)
        guest.detach_interface(mac)
    time.sleep(EVENT_GRACE_S)
    samples = check_whole_scrape(exporter)
    left = [(n, dict(labels)) for (n, labels), _v in samples.values.items()
            if dict(labels).get("domain") == guest.name
            and (dict(labels).get("target") == target or dict(labels).get("interface") == tap)]
    assert not left, "series of unplugged devices: %s" % left
