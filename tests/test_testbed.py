"""The test bed itself: guests behave as the other tests assume, against the real libvirtd."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import testbed as tb


def _rates(guests, seconds=3.0):
    """{name: {key: growth per wall second}} of cpu.time, vcpu.0.time and vcpu.0.delay (s/s)
    over `seconds`, one virsh domstats call per sample so all guests share the window."""
    names = [g.name for g in guests]
    keys = ("cpu.time", "vcpu.0.time", "vcpu.0.delay")

    def sample():
        t = time.monotonic()
        return t, tb.parse_domstats(tb.virsh("domstats", "--raw", "--cpu-total", "--vcpu", *names))

    t0, s0 = sample()
    time.sleep(seconds)
    t1, s1 = sample()
    return {n: {k: (s1[n][k] - s0[n][k]) / 1e9 / (t1 - t0) for k in keys} for n in names}


# ---- no libvirtd needed ---------------------------------------------------------------------


def test_boot_sectors_are_bios_bootable():
    for kind in ("busy", "idle"):
        sector = tb.bootsector.build(kind)
        assert len(sector) == 512 and sector[510:] == b"\x55\xaa"
    assert tb.bootsector.busy()[:2] == b"\xeb\xfe"
    assert tb.bootsector.idle()[:3] == b"\xf4\xeb\xfd"


def test_writer_bakes_in_its_parameters():
    s = tb.bootsector.writer(start_lba=0x12345, stride=0x10080, max_lba=0x12345 + 0x10080 * 4,
                             wait_us=0x20003)
    dap = s[0x40:0x50]
    assert dap[0] == 0x10 and int.from_bytes(dap[2:4], "little") == 1
    assert int.from_bytes(dap[8:16], "little") == 0x12345
    assert int.from_bytes(s[0x50:0x52], "little") == 5  # writes left
    code = s[:0x40]
    assert b"\x81\x06\x48\x7c\x80\x00" in code and b"\x81\x16\x4a\x7c\x01\x00" in code  # stride
    assert b"\xb9\x02\x00" in code and b"\xba\x03\x00" in code  # CX:DX = wait
    with pytest.raises(ValueError):
        tb.bootsector.writer(start_lba=0, stride=1, max_lba=70000, wait_us=0)


def test_parse_domstats_raw():
    text = ("Domain: 'a'\n  state.state=1\n  cpu.time=123\n  block.0.path=/x y\n\n"
            "Domain: 'b'\n  balloon.current=65536\n  dirtyrate.calc_mode=page-sampling\n")
    assert tb.parse_domstats(text) == {
        "a": {"state.state": 1, "cpu.time": 123, "block.0.path": "/x y"},
        "b": {"balloon.current": 65536, "dirtyrate.calc_mode": "page-sampling"},
    }


# ---- against libvirtd -----------------------------------------------------------------------


def test_busy_guest_spins_idle_guest_sleeps(standard_guests):
    # standard_guests are booted: past SeaBIOS, running the boot sector.
    rates = _rates([standard_guests.busy, standard_guests.idle])
    busy, idle = rates[standard_guests.busy.name], rates[standard_guests.idle.name]
    # A spinning vCPU is always runnable: time run + time waiting for a host CPU (delay) is
    # the whole window, however loaded the host is.
    assert busy["vcpu.0.time"] + busy["vcpu.0.delay"] > 0.8, busy
    # It gets more than half a core, unless other work on the host kept it waiting.
    assert busy["cpu.time"] > 0.5 or busy["vcpu.0.delay"] > 0.3, busy
    # (Not delay for the idle one: each timer wake-up queues behind other work on a busy host.)
    assert idle["cpu.time"] < 0.05 and idle["vcpu.0.time"] < 0.05, idle


def test_blank_guest_has_block_net_balloon_and_iothread_stats(standard_guests):
    g = standard_guests.blank
    s = g.domstats()
    assert s["vcpu.current"] == 2
    assert s["block.count"] == 1
    assert s["block.0.name"] == "vda" and s["block.0.path"] == g.disk_path
    assert s["block.0.capacity"] == 1 << 30
    # For a file libvirt's physical is the space it occupies (st_blocks), not its length.
    assert s["block.0.physical"] == os.stat(g.disk_path).st_blocks * 512
    assert s["block.0.allocation"] == 0  # nothing in the guest writes
    assert s["net.count"] == 1 and s["net.0.name"] == g.interface_dev
    assert s["balloon.maximum"] == 64 * 1024
    assert s["iothread.count"] == 1
    assert Path(f"/proc/{g.pid}").exists()


def test_writer_on_loop_device_moves_allocation(testbed):
    w = tb.WriterParams(start_lba=4096, stride=128, max_lba=4096 + 128 * 15, wait_us=100_000,
                        capacity_mib=1024, physical_mib=64)
    g = testbed.make_guest("writer", writer_params=w, interface=False)
    assert g.loop_device and g.disk_path == g.loop_device
    s = g.domstats("block")
    assert s["block.0.physical"] == tb.blockdev_size(g.loop_device) == 64 << 20
    assert s["block.0.capacity"] == 1 << 30
    assert s["block.0.allocation"] == 0  # QEMU's highest written offset starts at 0

    g.wait_booted()
    allocations, first_write, deadline = [], None, time.monotonic() + 30
    while True:
        s = g.domstats("block")
        if s["block.0.wr.reqs"] >= 1 and first_write is None:
            first_write = time.monotonic()
        allocations.append(s["block.0.allocation"])
        if s["block.0.wr.reqs"] >= w.writes:
            writing_s = time.monotonic() - first_write
            break
        assert time.monotonic() < deadline, f"only {s['block.0.wr.reqs']} writes"
        time.sleep(0.05)
    assert w.writes == 16
    # int 15h/86h paces the writes: 15 waits of 0.1 s (minus polling slack).
    assert writing_s > 1.2
    # Each write lands in a new 64 KiB qcow2 cluster, appended to the image: allocation is the
    # image's highest written host offset and grows with every write.
    assert allocations == sorted(allocations) and len(set(allocations)) >= 4
    assert w.writes * 65536 < allocations[-1] < s["block.0.physical"]
    time.sleep(0.5)
    s2 = g.domstats("block")
    assert s2["block.0.wr.reqs"] == w.writes  # then it halts
    assert s2["block.0.allocation"] == allocations[-1]


def test_hotplug_disk_and_interface(testbed):
    g = testbed.make_guest("blank", persistent=False, iothread=False)
    target = g.attach_disk(size_mib=16)
    tap, mac = g.attach_interface()
    s = g.domstats("block", "net")
    assert s["block.count"] == 2 and s["block.1.name"] == target
    assert s["block.1.capacity"] == 16 << 20
    assert s["net.count"] == 2 and s["net.1.name"] == tap
    g.detach_disk(target)
    g.detach_interface(mac)
    s = g.domstats("block", "net")
    assert s["block.count"] == 1 and s["net.count"] == 1
    g.destroy()
    assert not tb.domain_exists(g.name)  # transient: gone once stopped


def test_gc_removes_only_guests_of_dead_owners(testbed):
    mine = testbed.make_guest("idle", start=False, interface=False)
    # Another "pytest run" that dies without cleaning up (os._exit skips atexit).
    code = ("import os, testbed; b = testbed.Testbed(); "
            "g = b.make_guest('writer', start=False); print(g.name, g.loop_device); os._exit(0)")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(Path(tb.__file__).parent)}).stdout
    orphan, loop = out.split()
    orphan_pid = orphan.split("-")[1]
    assert tb.domain_exists(orphan)
    assert loop in subprocess.check_output(["losetup", "-a"], text=True)

    removed = tb.gc()
    assert orphan in removed and not tb.domain_exists(orphan)
    assert not (tb.IMAGE_DIR / orphan).exists()
    assert f"{tb.IMAGE_DIR / orphan}/" not in subprocess.check_output(["losetup", "-a"], text=True)
    assert not (tb.OWNERS_DIR / orphan_pid).exists()
    assert tb.domain_exists(mine.name) and mine.name not in removed
    assert (tb.OWNERS_DIR / str(os.getpid())).exists()


GUESTS_CLI = [  # as scripts/testbed.sh runs it: Debian's interpreter, no virtualenv
    "/usr/bin/python3" if os.access("/usr/bin/python3", os.X_OK) else sys.executable,
    str(tb.REPO / "scripts/testbed_guests.py")]


def test_guest_commands_of_testbed_sh(testbed):
    names = subprocess.run(GUESTS_CLI + ["demo-names"], check=True, capture_output=True, text=True).stdout
    assert names.split() == ["demo-busy", "demo-idle", "demo-blank"]
    usage = subprocess.run(GUESTS_CLI + ["demo-sideways"], capture_output=True, text=True)
    assert usage.returncode == 2 and "usage:" in usage.stderr and not usage.stdout
    # status counts this process's guests, its owner alive
    before = len([n for n in tb.domain_names() if tb.owner_of(n) == os.getpid()])
    testbed.make_guest("idle", start=False, interface=False)
    status = subprocess.run(GUESTS_CLI + ["status"], check=True, capture_output=True, text=True).stdout
    assert "test guests of pid %d (alive): %d" % (os.getpid(), before + 1) in status.splitlines(), status
