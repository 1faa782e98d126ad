"""Drive watermarks against the real test bed: a writer guest whose boot disk is a thin qcow2 straight
on a loop block device (physical = the device size, as on an LV) grows its allocation through BIOS
writes; the exporter's values are compared with virsh, qemu-img, blockdev and virt-admin.

Small chunk/utilization flags (64 MiB, 75 % → limit 16 MiB) let a 64 MiB volume cross the watermark
within seconds. The guest is suspended wherever exact equality is checked: allocation then stands still.
"""

from __future__ import annotations

import os
import socket
import subprocess

import pytest

import testbed as tb
import watermark_bed as wb
from watermark_bed import MIB, value

pytestmark = pytest.mark.libvirt

WM_FLAGS = ("--collector.watermark.chunk-mib", "64", "--collector.watermark.utilization-percent", "75")
# vdsm's rule: extend when free space falls under (100 - utilization) % of the chunk. Not 50 %, where
# utilization % of the chunk (a slip of the formula) would give the same limit.
LIMIT = 16 * MIB
CHUNK = 64 * MIB
# The threshold test wants room past each threshold for the writer to go on before it is suspended:
# a limit of half the chunk, 32 MiB (the limit's formula is checked with WM_FLAGS).
THRESHOLD_FLAGS = ("--collector.watermark.chunk-mib", "64", "--collector.watermark.utilization-percent", "50",
                   "--collector.watermark.threshold")
GROW_TIMEOUT_S = 180  # one BIOS write (1 MiB of allocation here) takes 50-150 ms, more on a loaded host
# A domain whose job was busy (suspend, I/O-error pause) or that the sampler set apart as a suspect
# comes back without its block group for a moment (the sampler's prober clears it within seconds).
SCRAPE_SIZED_TIMEOUT_S = 30


def writer(physical_mib: int, writes: int, wait_us: int = 100_000) -> tb.WriterParams:
    # one write per 1 MiB qcow2 cluster (wb.make_writer): each moves allocation by a cluster
    return tb.WriterParams(start_lba=2048, stride=2048, max_lba=2048 + 2048 * (writes - 1), wait_us=wait_us,
                           capacity_mib=1024, physical_mib=physical_mib)


def _grow_past(guest, bytes_: int) -> None:
    wb.wait_for(lambda: wb.allocation(guest) > bytes_, GROW_TIMEOUT_S,
                "allocation of %s past %d" % (guest.name, bytes_), 0.1)


def _top(series, name, guest):
    return value(series, name, domain=guest.name, target="vda")


def _scrape_sized(exp, guest):
    """A scrape that has the guest's block sizes: one taken right after a suspend, a start or an
    I/O-error pause may find the domain's job busy, and NOWAIT then leaves its block group out."""
    return wb.scrape_until(exp, "block sizes of %s" % guest.name,
                           lambda s: _top(s, "libvirt_domain_block_allocation_bytes", guest) is not None,
                           SCRAPE_SIZED_TIMEOUT_S)


def check_sizes_and_rule(exp, guest, host: wb.Host = wb.HERE) -> dict:
    """With the guest suspended: the exporter's sizes equal every reference (read on ``host``), and the
    watermark values follow the rule from them. Needs the exporter to run with WM_FLAGS."""
    m = _scrape_sized(exp, guest)
    alloc = _top(m, "libvirt_domain_block_allocation_bytes", guest)
    cap = _top(m, "libvirt_domain_block_capacity_bytes", guest)
    phys = _top(m, "libvirt_domain_block_physical_bytes", guest)
    assert {"allocation": alloc, "capacity": cap, "physical": phys} == wb.domblkinfo(guest.name, "vda", host)
    ref = wb.layer_stats(guest.name, host)[("vda", None)]
    assert (alloc, cap, phys) == (ref["allocation"], ref["capacity"], ref["physical"])
    assert cap == wb.qemu_img_info(guest.disk_path, host=host)[0]["virtual-size"] == 1024 * MIB
    assert phys == wb.blockdev_size(guest.disk_path, host)
    headroom = _top(m, "libvirt_domain_block_watermark_headroom_bytes", guest)
    assert headroom == phys - alloc
    assert _top(m, "libvirt_domain_block_watermark_limit_bytes", guest) == LIMIT
    assert _top(m, "libvirt_domain_block_extension_needed", guest) == (1 if headroom < LIMIT else 0)
    assert _top(m, "libvirt_domain_block_watermark_next_size_bytes", guest) == phys + CHUNK
    return {"allocation": alloc, "physical": phys, "headroom": headroom, "series": m}


def test_watermark_follows_the_rule_across_the_limit_read_only(testbed):
    guest = wb.make_writer(testbed, writer(physical_mib=64, writes=56))
    clients_before = wb.libvirt_clients(os.getpid())
    with wb.running_exporter(*WM_FLAGS) as exp:
        guest.wait_booted()
        # below the watermark: headroom > LIMIT
        wb.wait_for(lambda: wb.allocation(guest) > 4 * MIB, GROW_TIMEOUT_S, "allocation over 4 MiB", 0.1)
        wb.suspend(guest)
        before = check_sizes_and_rule(exp, guest)
        assert before["headroom"] > LIMIT, "the writer outran the test: suspend came too late"
        assert _top(before["series"], "libvirt_domain_block_extension_needed", guest) == 0
        wb.resume(guest)
        # past it
        _grow_past(guest, 64 * MIB - LIMIT + MIB)
        wb.suspend(guest)
        after = check_sizes_and_rule(exp, guest)
        assert after["headroom"] < LIMIT
        assert _top(after["series"], "libvirt_domain_block_extension_needed", guest) == 1

        # read-only by default: every libvirtd connection the exporter opened is read-only, nothing armed
        ours = {c: ro for c, ro in wb.libvirt_clients(os.getpid()).items() if c not in clients_before}
        assert ours and all(ours.values()), ours
        assert "block.0.threshold" not in tb.virsh_domstats(guest.name, "block")
        assert _top(after["series"], "libvirt_domain_block_threshold_bytes", guest) is None
        assert value(after["series"], "libvirt_exporter_block_threshold_errors_total") == 0
        assert value(after["series"], "libvirt_domain_block_threshold_events_total",
                     domain=guest.name, target="vda") == 0


def test_enospc_pauses_the_guest_and_is_counted(testbed):
    # 16 MiB of storage under a guest that writes ~40 MiB: it runs out, QEMU stops it (werror=enospc)
    guest = wb.make_writer(testbed, writer(physical_mib=16, writes=40))
    with wb.running_exporter(*WM_FLAGS) as exp:
        m = _scrape_sized(exp, guest)
        enospc = dict(domain=guest.name, target="vda", reason="enospc")
        assert value(m, "libvirt_domain_block_io_errors_total", **enospc) == 0
        wb.wait_for(lambda: wb.state_reason(guest) == (3, 5), GROW_TIMEOUT_S, "guest paused on an I/O error")
        # (a scrape right at the pause may find the domain's job busy: NOWAIT leaves its block group out)
        m = wb.scrape_until(exp, "the I/O error counted", lambda s: bool(
            value(s, "libvirt_domain_block_io_errors_total", **enospc)
            and _top(s, "libvirt_domain_block_physical_bytes", guest)), SCRAPE_SIZED_TIMEOUT_S)
        assert value(m, "libvirt_domain_block_io_errors_total", **enospc) == 1
        assert value(m, "libvirt_domain_state", domain=guest.name) == 3
        assert value(m, "libvirt_domain_state_reason", domain=guest.name) == 5
        phys = _top(m, "libvirt_domain_block_physical_bytes", guest)
        alloc = _top(m, "libvirt_domain_block_allocation_bytes", guest)
        assert phys == 16 * MIB and alloc >= phys  # the failed write still moved the watermark
        assert _top(m, "libvirt_domain_block_watermark_headroom_bytes", guest) == phys - alloc
        assert _top(m, "libvirt_domain_block_extension_needed", guest) == 1

        # what an extension does: the guest goes on, then fills the bigger volume too
        wb.grow_loop_device(guest.disk_path, 24 * MIB)
        wb.resume(guest)
        wb.wait_for(lambda: wb.state_reason(guest)[0] == 1, 10, "running again")
        wb.wait_for(lambda: wb.state_reason(guest) == (3, 5), GROW_TIMEOUT_S, "paused again")
        m = wb.scrape_until(exp, "the second error counted", lambda s: bool(
            value(s, "libvirt_domain_block_io_errors_total", **enospc) == 2
            and _top(s, "libvirt_domain_block_physical_bytes", guest)), SCRAPE_SIZED_TIMEOUT_S)
        assert _top(m, "libvirt_domain_block_physical_bytes", guest) == 24 * MIB


def test_threshold_one_event_per_crossing_and_rearmed_after_extension(testbed):
    guest = wb.make_writer(testbed, writer(physical_mib=64, writes=120), start=False)
    clients_before = wb.libvirt_clients(os.getpid())
    with wb.running_exporter(*THRESHOLD_FLAGS) as exp:
        ours = {c: ro for c, ro in wb.libvirt_clients(os.getpid()).items() if c not in clients_before}
        assert ours and not any(ours.values()), ours
        guest.start()
        # armed because the domain started, before any scrape: libvirt itself says so
        wb.wait_for(lambda: tb.virsh_domstats(guest.name, "block").get("block.0.threshold") == 32 * MIB, 30,
                    "threshold armed at physical - limit")
        m = _scrape_sized(exp, guest)
        assert _top(m, "libvirt_domain_block_threshold_bytes", guest) == 32 * MIB
        events = dict(domain=guest.name, target="vda")
        assert value(m, "libvirt_domain_block_threshold_events_total", **events) == 0

        # a thin disk hot-plugged: armed once the XML cache has re-read the domain (next scrapes)
        extra = wb.make_loop_device(guest.directory, "hotplug.img", 48 * MIB)
        tb.run(["qemu-img", "create", "-q", "-f", "qcow2", extra, "256M"])
        tb.virsh("attach-disk", guest.name, extra, "sdb", "--live", "--driver", "qemu", "--subdriver", "qcow2",
                 "--targetbus", "scsi", "--sourcetype", "block")
        wb.scrape_until(exp, "hot-plugged disk armed", lambda s: value(
            s, "libvirt_domain_block_threshold_bytes", domain=guest.name, target="sdb") == 16 * MIB, 20)
        assert tb.virsh_domstats(guest.name, "block")["block.1.threshold"] == 16 * MIB

        # first crossing; the writer goes on past it before we look
        _grow_past(guest, 32 * MIB + 4 * MIB)
        wb.suspend(guest)
        m = wb.scrape_until(exp, "one event", lambda s: bool(
            value(s, "libvirt_domain_block_threshold_events_total", **events)
            and _top(s, "libvirt_domain_block_allocation_bytes", guest) is not None), SCRAPE_SIZED_TIMEOUT_S,
            show=lambda s: {k: v for k, v in s.items() if dict(k[1]).get("domain") == guest.name
                            and ("threshold" in k[0] or "allocation" in k[0] or "physical" in k[0])})
        assert value(m, "libvirt_domain_block_threshold_events_total", **events) == 1
        assert _top(m, "libvirt_domain_block_extension_needed", guest) == 1
        # QEMU disarmed it, and below the watermark it stays so (re-arming would fire on any write)
        assert _top(m, "libvirt_domain_block_threshold_bytes", guest) is None
        assert "block.0.threshold" not in tb.virsh_domstats(guest.name, "block")
        wb.resume(guest)
        _grow_past(guest, 44 * MIB)
        wb.suspend(guest)
        m = _scrape_sized(exp, guest)
        assert value(m, "libvirt_domain_block_threshold_events_total", **events) == 1

        # the volume is extended: re-armed at the new physical - limit
        wb.grow_loop_device(guest.disk_path, 128 * MIB)
        m = wb.scrape_until(exp, "re-armed at 96 MiB", lambda s: _top(
            s, "libvirt_domain_block_threshold_bytes", guest) == 96 * MIB, 20)
        assert tb.virsh_domstats(guest.name, "block")["block.0.threshold"] == 96 * MIB
        assert _top(m, "libvirt_domain_block_extension_needed", guest) == 0

        # second crossing: exactly one more
        wb.resume(guest)
        _grow_past(guest, 96 * MIB + 4 * MIB)
        wb.suspend(guest)
        m = wb.scrape_until(exp, "second event", lambda s: bool(
            value(s, "libvirt_domain_block_threshold_events_total", **events) == 2
            and _top(s, "libvirt_domain_block_allocation_bytes", guest) is not None), SCRAPE_SIZED_TIMEOUT_S,
            show=lambda s: {k: v for k, v in s.items() if dict(k[1]).get("domain") == guest.name
                            and ("threshold" in k[0] or "allocation" in k[0] or "physical" in k[0])})
        assert _top(m, "libvirt_domain_block_threshold_bytes", guest) is None
        assert value(m, "libvirt_exporter_block_threshold_errors_total") == 0


def _nbd_server(directory, port: int):
    image = directory / "nbd.qcow2"
    tb.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "32M"])
    proc = subprocess.Popen(["qemu-nbd", "--persistent", "--shared=4", "-f", "qcow2", "-b", "127.0.0.1",
                                "-p", str(port), "-x", "vet", str(image)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wb.wait_for(lambda: proc.poll() is not None or _port_open(port), 10, "qemu-nbd listening", 0.1)
    assert proc.poll() is None, proc.stderr.read().decode()
    return proc


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_every_layer_matches_and_only_thin_block_layers_get_watermarks(testbed):
    """vda: thin qcow2 on a loop device over a qcow2 base on another loop device; vdb: a qcow2 file;
    vdc: an NBD network disk; hdc: an empty CD-ROM."""
    w = writer(physical_mib=64, writes=16, wait_us=1000)
    guest = testbed.make_guest("writer", writer_params=w, interface=False, start=False)
    d = guest.directory
    base = wb.make_loop_device(d, "base.img", 48 * MIB)
    tb.run(["qemu-img", "create", "-q", "-f", "qcow2", base, "1024M"])
    tb.write_boot_sector(base, "writer", w)
    tb.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2", guest.disk_path])
    file_disk = d / "vdb.qcow2"
    tb.run(["qemu-img", "create", "-q", "-f", "qcow2", str(file_disk), "64M"])
    port = wb.free_port()
    nbd = _nbd_server(d, port)
    try:
        extra = (f"<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>"
                 f"<source file='{file_disk}'/><target dev='vdb' bus='virtio'/></disk>"
                 f"<disk type='network' device='disk'><driver name='qemu' type='raw'/>"
                 f"<source protocol='nbd' name='vet'><host name='127.0.0.1' port='{port}'/></source>"
                 f"<target dev='vdc' bus='virtio'/></disk>"
                 f"<disk type='file' device='cdrom'><driver name='qemu' type='raw'/>"
                 f"<target dev='hdc' bus='ide'/><readonly/></disk></devices>")
        xml = tb.virsh("dumpxml", "--inactive", guest.name).replace("</devices>", extra, 1)
        (d / "domain.xml").write_text(xml)
        tb.virsh("define", str(d / "domain.xml"))
        guest.start()
        guest.wait_booted()
        wb.wait_for(lambda: int(tb.virsh_domstats(guest.name, "block")["block.0.wr.reqs"])
                    >= 16, 60, "the writer's 16 writes", 0.2)
        wb.suspend(guest)
        with wb.running_exporter(*WM_FLAGS) as exp:
            m = _scrape_sized(exp, guest)
        refs = wb.layer_stats(guest.name)
        # libvirt numbers the layers of all disks in one sequence: the base's index is whatever it got
        (base_index,) = [b for t, b in refs if t == "vda" and b is not None]
        assert set(refs) == {("vda", None), ("vda", base_index), ("vdb", None), ("vdc", None), ("hdc", None)}

        def exported(target, backing, key):
            labels = dict(domain=guest.name, target=target)
            if backing is not None:
                labels["backing_index"] = backing
            return value(m, "libvirt_domain_block_%s_bytes" % key, **labels)

        # every layer: what libvirt says, as the exporter says it
        for (target, backing), ref in refs.items():
            for key in ("allocation", "capacity", "physical"):
                assert exported(target, backing, key) == ref.get(key), (target, backing, key)
        # and what the storage says
        chain = wb.qemu_img_info(guest.disk_path, backing_chain=True)
        assert [c["virtual-size"] for c in chain] == [exported("vda", None, "capacity"),
                                                      exported("vda", base_index, "capacity")]
        assert exported("vda", None, "physical") == wb.blockdev_size(guest.disk_path) == 64 * MIB
        assert exported("vda", base_index, "physical") == wb.blockdev_size(base) == 48 * MIB
        assert exported("vda", base_index, "allocation") == 0  # nothing writes a backing layer
        assert exported("vdb", None, "capacity") == wb.qemu_img_info(str(file_disk))[0]["virtual-size"]
        # a file's physical is what it occupies on its filesystem (QEMU's actual-size), not its length
        assert exported("vdb", None, "physical") == os.stat(file_disk).st_blocks * 512 == \
            wb.qemu_img_info(str(file_disk))[0]["actual-size"]

        def watermark_targets(name):
            # the top layer has no backing_index: sort it first (None does not compare with str)
            return sorted(((dict(k)["target"], dict(k).get("backing_index"))
                           for k in wb.series_of(m, name, domain=guest.name)), key=lambda t: (t[0], t[1] or ""))

        # Both layers of vda are qcow2 on a block device (the loop devices made above): thin block
        # layers. vdb is a file, vdc a network disk, hdc an empty CD-ROM: none of them.
        thin = [("vda", None), ("vda", base_index)]
        for name in ("libvirt_domain_block_watermark_headroom_bytes", "libvirt_domain_block_watermark_limit_bytes",
                     "libvirt_domain_block_extension_needed", "libvirt_domain_block_watermark_next_size_bytes",
                     "libvirt_domain_block_threshold_events_total"):
            assert watermark_targets(name) == thin, name
        alloc = exported("vda", None, "allocation")
        assert _top(m, "libvirt_domain_block_watermark_headroom_bytes", guest) == 64 * MIB - alloc
        # I/O error counters start at 0 for every disk, not for the CD-ROM
        assert watermark_targets("libvirt_domain_block_io_errors_total") == [
            ("vda", None), ("vdb", None), ("vdc", None)]
    finally:
        guest.destroy()
        nbd.terminate()
        nbd.wait(10)
