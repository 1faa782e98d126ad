"""source.numa against a recorded two-node host tree (tests/fixtures/numa/twonode): readers, pid lookup,
the background reader's caching, health reasons, and that a scrape never waits for a read.

The fixture root: NUMA nodes 0 (CPUs 0-7) and 1 (CPUs 8-15); one QEMU, pid 4242, domain "multi", with
4 vCPU threads that last ran on CPUs 1, 9, 4 and 12; numa_maps with 4 KiB, 2 MiB and 1 GiB pages.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import stat
import tempfile
import threading
import time
from pathlib import Path

import pytest

from bounds import finishes, wait_for
from virt_exporter.source import numa
from virt_exporter.source.host import read_qemu_pid
from virt_exporter.source.numa import NumaPlacementReader

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures/numa/twonode"
N0_BYTES = 1_090_756_608
N1_BYTES = 2_038_497_280
KIB, MIB, GIB = 1024, 1024 ** 2, 1024 ** 3


# --- the /proc parsers ----------------------------------------------------------------------------


def test_numa_maps_three_lines():
    text = ("7f00 default anon=3 dirty=3 N0=2 N1=1 kernelpagesize_kB=4\n"
            "7f01 bind:1 file=/dev/hugepages/x huge dirty=2 N1=2 kernelpagesize_kB=2048\n"
            "7f02 default\n")
    assert numa.numa_maps_bytes_by_node(text) == {0: 2 * 4 * KIB, 1: 1 * 4 * KIB + 2 * 2 * MIB}


def test_numa_maps_without_kernelpagesize_uses_default_page():
    assert numa.numa_maps_bytes_by_node("7f00 default anon=5 N3=5\n", default_page_kib=16) == {3: 5 * 16 * KIB}


def test_numa_maps_ignores_counts_that_are_not_node_pages():
    # anon= / mapped= / dirty= / mapmax= / active= are other counts of the same pages
    text = "7f00 default file=/lib/x.so anon=9 mapped=40 mapmax=7 active=3 dirty=9 N2=40 kernelpagesize_kB=4\n"
    assert numa.numa_maps_bytes_by_node(text) == {2: 40 * 4 * KIB}


def test_numa_maps_file_name_that_looks_like_a_node_token_is_not_counted():
    # the kernel prints file= verbatim; only whole N<k>=<pages> tokens are pages
    text = "7f00 default file=/tmp/N0=99 mapped=1 N1=1 kernelpagesize_kB=4\n"
    assert numa.numa_maps_bytes_by_node(text) == {1: 4 * KIB}


def test_recorded_two_node_qemu_numa_maps():
    """The fixture: a QEMU with 4 KiB mappings on both nodes, hugetlbfs 2 MiB pages bound to each
    node, one 1 GiB page on node 1, an interleaved anonymous region, and unpopulated mappings."""
    by_node = numa.numa_maps_bytes_by_node((FIXTURE / "proc/4242/numa_maps").read_text())
    small_n0 = 1024 + 25 + 3072 + 131072 + 33
    small_n1 = 15 + 2048 + 131072 + 1
    assert by_node == {
        0: small_n0 * 4 * KIB + 256 * 2 * MIB,
        1: small_n1 * 4 * KIB + 200 * 2 * MIB + 1 * GIB,
    }
    assert by_node[0] == 1_090_756_608
    assert by_node[1] == 2_038_497_280


def test_task_stat_field_39_with_spaces_and_parens_in_comm():
    line = "4252 (CPU 1/KVM) S " + " ".join(["0"] * 35) + " 9 0 0 0 342 0 0 0 0 0 0 0 0 0\n"
    assert numa.parse_task_stat_cpu(line) == 9
    tricky = "4260 (worker (x) y) S " + " ".join(["1"] * 35) + " 15 0 0 0 0 0 0 0 0 0 0 0 0 0\n"
    assert numa.parse_task_stat_cpu(tricky) == 15


def test_task_stat_too_short_raises():
    with pytest.raises(IndexError):
        numa.parse_task_stat_cpu("1 (x) S 1 2 3\n")


@pytest.mark.parametrize("comm,index", [("CPU 0/KVM\n", 0), ("CPU 17/KVM", 17), ("CPU 3/TCG", 3),
                                        ("qemu-system-x86", None), ("IO iothread1", None),
                                        ("CPU 1", None)])
def test_vcpu_index(comm, index):
    assert numa.vcpu_index(comm) == index


def test_parse_cpulist():
    assert numa.parse_cpulist("0-3,8,10-11\n") == [0, 1, 2, 3, 8, 10, 11]
    assert numa.parse_cpulist("5") == [5]
    assert numa.parse_cpulist("\n") == []


# --- the readers -----------------------------------------------------------------------------------


class FakeClock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def settled(reader: NumaPlacementReader):
    """Two rounds: a failure counts against health only when the immediate second read fails too."""
    reader.refresh_once()
    return reader.refresh_once()


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A writable copy of the fixture tree."""
    dst = tmp_path / "root"
    shutil.copytree(FIXTURE, dst)
    return dst


# --- plain readers ---------------------------------------------------------------------------------

def test_read_numa_maps_multi_node_with_huge_pages():
    assert numa.read_numa_maps(4242, str(FIXTURE)) == {0: N0_BYTES, 1: N1_BYTES}


def test_read_vcpu_cpus_only_vcpu_threads():
    assert numa.read_vcpu_cpus(4242, str(FIXTURE)) == {0: 1, 1: 9, 2: 4, 3: 12}


def test_read_node_cpus():
    assert numa.read_node_cpus(str(FIXTURE)) == {0: list(range(0, 8)), 1: list(range(8, 16))}


def test_pid_file_and_proc_scan():
    assert read_qemu_pid("multi", str(FIXTURE)) == 4242
    assert read_qemu_pid("absent", str(FIXTURE)) is None
    pids = numa.qemu_pids_by_name(str(FIXTURE))
    assert pids.get("multi") == 4242
    assert "mult" not in pids  # a prefix of the name is not the name


@pytest.mark.parametrize("name,arg,match", [
    ("multi", b"guest=multi,debug-threads=on", True),
    ("multi", b"guest=multi", True),
    ("a", b"guest=a,,b,debug-threads=on", False),   # that QEMU runs domain "a,b"
    ("a,b", b"guest=a,,b,debug-threads=on", True),
    ("multi", b"guest=multi2,debug-threads=on", False),
])
def test_cmdline_names_guest(name, arg, match):
    assert (numa.qemu_guest_name(b"/usr/bin/qemu-system-x86_64\0-name\0" + arg + b"\0-S\0") == name) is match


def test_proc_scan_old_style_name(root: Path):
    (root / "proc/4242/cmdline").write_bytes(b"/usr/bin/qemu-kvm\0-name\0multi\0-m\x00512\0")
    (root / "run/libvirt/qemu/multi.pid").unlink()
    assert numa.qemu_pids_by_name(str(root)) == {"multi": 4242}


# --- the background reader, one round at a time ----------------------------------------------------

def test_reader_reads_domain_through_pid_file():
    reader = NumaPlacementReader(root=str(FIXTURE), interval_s=30, clock=FakeClock())
    reader.set_targets({"u-multi": ("multi", None)})
    snap = reader.refresh_once()
    assert snap.readable and snap.reason == ""
    p = snap.domains["u-multi"]
    assert (p.pid, p.error) == (4242, "")
    assert p.memory_bytes_by_node == {0: N0_BYTES, 1: N1_BYTES}
    assert p.vcpu_cpus == {0: 1, 1: 9, 2: 4, 3: 12}
    assert snap.node_cpus == {0: list(range(8)), 1: list(range(8, 16))}
    assert reader.snapshot() is snap


def test_reader_reads_each_domain_at_most_every_interval(root: Path):
    clock = FakeClock()
    reader = NumaPlacementReader(root=str(root), interval_s=30, clock=clock)
    reader.set_targets({"u": ("multi", 4242)})
    first = reader.refresh_once().domains["u"]
    # the process's memory moves; the cached reading stands until the interval has passed
    (root / "proc/4242/numa_maps").write_text("7f00 default anon=1 N1=10 kernelpagesize_kB=4\n")
    clock.t += 29.9
    assert reader.refresh_once().domains["u"] is first
    clock.t += 0.1
    assert reader.refresh_once().domains["u"].memory_bytes_by_node == {1: 40960}


def test_reader_rereads_at_once_when_the_pid_changes(root: Path):
    clock = FakeClock()
    reader = NumaPlacementReader(root=str(root), interval_s=30, clock=clock)
    reader.set_targets({"u": ("multi", 4242)})
    reader.refresh_once()
    shutil.copytree(root / "proc/4242", root / "proc/5000")
    (root / "proc/5000/numa_maps").write_text("7f00 default anon=1 N0=1 kernelpagesize_kB=4\n")
    clock.t += 1
    reader.set_targets({"u": ("multi", 5000)})
    p = reader.refresh_once().domains["u"]
    assert (p.pid, p.memory_bytes_by_node) == (5000, {0: 4096})


def test_reader_drops_domains_no_longer_targeted():
    reader = NumaPlacementReader(root=str(FIXTURE), interval_s=30, clock=FakeClock())
    reader.set_targets({"u": ("multi", 4242)})
    assert "u" in reader.refresh_once().domains
    reader.set_targets({})
    snap = reader.refresh_once()
    assert snap.domains == {} and snap.readable


def test_no_proc_under_root(tmp_path: Path):
    # a container without the host's /proc mounted
    reader = NumaPlacementReader(root=str(tmp_path), interval_s=30, clock=FakeClock())
    reader.set_targets({"u": ("multi", 4242)})
    snap = reader.refresh_once()  # no /proc at all is never transient
    assert (snap.readable, snap.reason) == (False, numa.REASON_NO_PROC)
    assert snap.domains["u"].memory_bytes_by_node is None


def test_pid_not_found_pid_unknown_pid_mismatch():
    reader = NumaPlacementReader(root=str(FIXTURE), interval_s=30, clock=FakeClock())
    reader.set_targets({"gone": ("multi", 999999)})
    snap = settled(reader)
    assert (snap.readable, snap.reason) == (False, numa.REASON_PID_NOT_FOUND)

    reader = NumaPlacementReader(root=str(FIXTURE), interval_s=30, clock=FakeClock())
    reader.set_targets({"nopid": ("nobody-knows", None)})
    assert settled(reader).reason == numa.REASON_PID_UNKNOWN

    # pid 4242 exists but is another domain's QEMU (a pid from another pid namespace)
    reader = NumaPlacementReader(root=str(FIXTURE), interval_s=30, clock=FakeClock())
    reader.set_targets({"other": ("other", 4242)})
    snap = settled(reader)
    assert snap.reason == numa.REASON_PID_MISMATCH
    assert snap.domains["other"].memory_bytes_by_node is None


def test_worst_reason_wins_and_good_domains_still_read():
    reader = NumaPlacementReader(root=str(FIXTURE), interval_s=30, clock=FakeClock())
    reader.set_targets({"ok": ("multi", 4242), "gone": ("x", 999999), "nopid": ("y", None)})
    snap = settled(reader)
    assert snap.reason == numa.REASON_PID_NOT_FOUND
    assert snap.domains["ok"].memory_bytes_by_node == {0: N0_BYTES, 1: N1_BYTES}


def test_a_domain_caught_starting_is_read_again_at_once_and_not_reported(root: Path):
    # libvirt writes the pid file before its child execs QEMU: for a moment the cmdline is not QEMU's
    cmdline = (root / "proc/4242/cmdline").read_bytes()
    (root / "proc/4242/cmdline").write_bytes(b"/usr/sbin/libvirtd\0--daemon\0")
    clock = FakeClock()
    reader = NumaPlacementReader(root=str(root), interval_s=30, clock=clock)
    reader.set_targets({"u": ("multi", 4242)})
    first = reader.refresh_once()
    assert first.domains["u"].error == numa.REASON_PID_MISMATCH
    assert first.readable  # one failure is not yet a health problem
    (root / "proc/4242/cmdline").write_bytes(cmdline)
    clock.t += 1  # the next tick, far inside the interval
    second = reader.refresh_once()
    assert second.readable and second.domains["u"].memory_bytes_by_node == {0: N0_BYTES, 1: N1_BYTES}


def test_a_confirmed_failure_is_retried_only_every_interval(root: Path):
    clock = FakeClock()
    reader = NumaPlacementReader(root=str(root), interval_s=30, clock=clock)
    reader.set_targets({"gone": ("multi", 999999)})
    snap = settled(reader)
    assert snap.domains["gone"].failures == 2 and not snap.readable
    clock.t += 10
    assert reader.refresh_once().domains["gone"] is snap.domains["gone"]
    clock.t += 20
    assert reader.refresh_once().domains["gone"].failures == 3


def _read_as_nobody(root: str, queue) -> None:
    os.setgid(65534)
    os.setuid(65534)
    reader = NumaPlacementReader(root=root, interval_s=30)
    reader.set_targets({"u": ("multi", 4242)})
    snap = settled(reader)
    p = snap.domains["u"]
    queue.put((snap.reason, p.memory_bytes_by_node, p.vcpu_cpus))


def test_permission_denied_like_a_non_root_exporter():
    """numa_maps of another user's process is ptrace-protected; reproduced with file modes."""
    top = Path(tempfile.mkdtemp(prefix="numa-perm-"))
    try:
        os.chmod(top, 0o755)
        root = top / "root"
        shutil.copytree(FIXTURE, root)
        for d, _dirs, _files in os.walk(root):
            os.chmod(d, 0o755)
        os.chmod(root / "proc/4242/numa_maps", 0o400)  # readable by its owner only
        if os.geteuid() == 0:
            ctx = multiprocessing.get_context("fork")
            queue = ctx.Queue()
            child = ctx.Process(target=_read_as_nobody, args=(str(root), queue))
            child.start()
            result = queue.get(timeout=30)
            child.join(10)
        else:
            os.chmod(root / "proc/4242/numa_maps", 0o000)
            reader = NumaPlacementReader(root=str(root), interval_s=30)
            reader.set_targets({"u": ("multi", 4242)})
            snap = settled(reader)
            p = snap.domains["u"]
            result = (snap.reason, p.memory_bytes_by_node, p.vcpu_cpus)
        reason, memory, vcpus = result
        assert reason == numa.REASON_PERMISSION
        assert memory is None
        # task stat stays world-readable, as on a real host: vCPU placement survives
        assert vcpus == {0: 1, 1: 9, 2: 4, 3: 12}
    finally:
        shutil.rmtree(top)


# --- the thread: a scrape never waits ----------------------------------------------------------------

def test_snapshot_never_blocks_on_a_stuck_read(root: Path):
    """numa_maps replaced by a FIFO: opening it blocks the reader thread until a writer appears,
    like a page-table walk of a huge guest would. snapshot() must answer at once meanwhile."""
    fifo = root / "proc/4242/numa_maps"
    fifo.unlink()
    os.mkfifo(fifo)
    reader = NumaPlacementReader(root=str(root), interval_s=30, tick_s=0.05)
    reader.start()
    try:
        reader.set_targets({"u": ("multi", 4242)})
        time.sleep(0.3)  # the thread is now inside open() of the FIFO
        # snapshot() returns while the read is still blocked (the FIFO has no writer yet)
        snaps = finishes(lambda: [reader.snapshot() for _ in range(100)])
        assert "u" not in snaps[-1].domains  # nothing published yet

        def feed() -> None:
            with open(fifo, "w") as f:
                f.write("7f00 default anon=2 N1=2 kernelpagesize_kB=4\n")

        writer = threading.Thread(target=feed, daemon=True)
        writer.start()
        wait_for(lambda: "u" in reader.snapshot().domains, 10, "the domain read", 0.02)
        assert reader.snapshot().domains["u"].memory_bytes_by_node == {1: 8192}
    finally:
        reader.stop(timeout_s=5)
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)


def test_thread_picks_up_new_targets_without_waiting_an_interval():
    reader = NumaPlacementReader(root=str(FIXTURE), interval_s=3600, tick_s=3600)
    before = reader.snapshot()
    reader.start()
    try:
        # the first (empty) round published; the thread now sleeps a tick of an hour
        wait_for(lambda: reader.snapshot() is not before, 10, "the first round", 0.01)
        reader.set_targets({"u": ("multi", 4242)})
        wait_for(lambda: "u" in reader.snapshot().domains, 10, "the new target read", 0.02)
        assert reader.snapshot().domains["u"].vcpu_cpus == {0: 1, 1: 9, 2: 4, 3: 12}
    finally:
        reader.stop(timeout_s=5)


def test_interval_must_be_positive():
    with pytest.raises(ValueError):
        NumaPlacementReader(interval_s=0)


def test_one_proc_scan_per_round_for_domains_without_pid(root: Path, monkeypatch):
    """Domains with neither a pid nor a pid file cost one /proc scan per round together, not one
    each (at a hundred such domains the per-domain scans were most of the idle exporter's CPU)."""
    (root / "run/libvirt/qemu/multi.pid").unlink()
    scans = []
    real = numa.qemu_pids_by_name
    monkeypatch.setattr(numa, "qemu_pids_by_name", lambda r: scans.append(r) or real(r))
    reader = NumaPlacementReader(root=str(root), interval_s=30, clock=FakeClock())
    reader.set_targets({"u-multi": ("multi", None), "u-x": ("x", None), "u-y": ("y", None)})
    snap = reader.refresh_once()
    assert len(scans) == 1
    assert snap.domains["u-multi"].pid == 4242
    assert snap.domains["u-x"].error == numa.REASON_PID_UNKNOWN


@pytest.mark.parametrize("arg,name", [
    (b"guest=multi,debug-threads=on", "multi"),
    (b"guest=a,,b,debug-threads=on", "a,b"),
    (b"guest=a,,,,b", "a,,b"),
    (b"multi", "multi"),
])
def test_qemu_guest_name(arg, name):
    assert numa.qemu_guest_name(b"/usr/bin/qemu-system-x86_64\0-name\0" + arg + b"\0-S\0") == name
