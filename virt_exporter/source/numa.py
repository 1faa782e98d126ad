"""Per-VM NUMA placement read from /proc: memory per node from numa_maps, vCPU threads' last CPU.

Reading /proc/<qemu pid>/numa_maps walks the process's page tables in the kernel, which grows with
guest memory, so it is never done on the scrape path: ``NumaPlacementReader`` reads in a background
thread, each domain at most every ``interval_s``, and a scrape takes the last published snapshot.
Everything goes through one ``root`` so tests can feed a multi-cell host or a host without /proc.

numa_maps has one line per mapping: address, policy, then tokens such as ``file=…``, ``heap``,
``huge``, ``anon=N``, ``N<node>=<pages>`` and ``kernelpagesize_kB=<k>``. Pages are counted in the
mapping's own page size, so hugetlbfs mappings (2 MiB, 1 GiB) count in huge pages while transparent
huge pages in ordinary mappings count in base pages. psutil has no reader for numa_maps or for the
CPU a thread last ran on, so these parsers are ours.
"""

from __future__ import annotations

import dataclasses
import errno
import glob
import logging
import os
import re
import threading
import time
from typing import Callable, Dict, List, Mapping, Optional, Tuple

from ..sample import DomainPlacement, NumaSnapshot
from .host import read_qemu_pid

log = logging.getLogger(__name__)

# Health reasons, worst first: the snapshot reports the worst one seen among the current domains.
REASON_NO_PROC = "no_proc"                      # no /proc under root at all
REASON_PERMISSION = "permission_denied"         # not root (numa_maps needs ptrace-read access)
REASON_PID_MISMATCH = "pid_mismatch"            # /proc/<pid> is not this domain's QEMU (other pid namespace)
REASON_PID_NOT_FOUND = "pid_not_found"          # no /proc/<pid> (container without the host's /proc)
REASON_PID_UNKNOWN = "pid_unknown"              # neither the sampler, the pid file nor a /proc scan gave a pid
REASON_READ_ERROR = "read_error"                # anything else (unparsable file, I/O error)
_REASON_ORDER = (REASON_NO_PROC, REASON_PERMISSION, REASON_PID_MISMATCH, REASON_PID_NOT_FOUND,
                 REASON_PID_UNKNOWN, REASON_READ_ERROR)
# A domain that is starting (libvirt's child has not exec'd QEMU yet) or stopping fails one read; it
# is read again at the next tick and counts against the health metric only when that fails too.
CONFIRM_FAILURES = 2


_NODE_TOKEN = re.compile(r"^N(\d+)=(\d+)$")
# QEMU names vCPU threads "CPU <n>/<accel>" (KVM, TCG …) when libvirt starts it with debug-threads=on.
_VCPU_COMM = re.compile(r"^CPU (\d+)/\S+$")


def numa_maps_bytes_by_node(text: str, default_page_kib: int = 4) -> Dict[int, int]:
    """Resident bytes per NUMA node of one process (numa_maps text): Σ over mappings of N<node> pages ×
    the mapping's page size (``kernelpagesize_kB``; ``default_page_kib`` for kernels that do not print
    it)."""
    by_node: Dict[int, int] = {}
    for line in text.splitlines():
        page_kib = default_page_kib
        pages: List[Tuple[int, int]] = []
        for token in line.split()[2:]:
            if token.startswith("kernelpagesize_kB="):
                page_kib = int(token.split("=", 1)[1])
                continue
            m = _NODE_TOKEN.match(token)
            if m:
                pages.append((int(m.group(1)), int(m.group(2))))
        for node, count in pages:
            by_node[node] = by_node.get(node, 0) + count * page_kib * 1024
    return by_node


def parse_task_stat_cpu(text: str) -> int:
    """Field 39 of /proc/<pid>/task/<tid>/stat: the CPU the thread last ran on.

    The second field (comm, in parentheses) may hold spaces and parentheses ("CPU 0/KVM"), so fields
    are counted from the last ')'. The first field after it is field 3.
    """
    rest = text[text.rindex(")") + 1:].split()
    return int(rest[39 - 3])


def vcpu_index(comm: str) -> Optional[int]:
    """The vCPU number of a QEMU thread named "CPU <n>/KVM", None for other threads."""
    m = _VCPU_COMM.match(comm.strip())
    return int(m.group(1)) if m else None


def parse_cpulist(text: str) -> List[int]:
    """A kernel cpulist ("0-3,8,10-11") as a sorted list of CPU ids."""
    cpus: List[int] = []
    for part in text.strip().split(","):
        if not part:
            continue
        lo, sep, hi = part.partition("-")
        if sep:
            cpus.extend(range(int(lo), int(hi) + 1))
        else:
            cpus.append(int(lo))
    return sorted(set(cpus))


def _path(root: str, *parts: str) -> str:
    return os.path.join(root, *parts)


def _read_text(path: str) -> str:
    with open(path, "rb") as f:
        return f.read().decode("utf-8", "replace")


def read_numa_maps(pid: int, root: str = "/") -> Dict[int, int]:
    """Resident bytes per NUMA node of process ``pid`` (numa_maps_bytes_by_node)."""
    page_kib = os.sysconf("SC_PAGE_SIZE") // 1024
    return numa_maps_bytes_by_node(_read_text(_path(root, "proc", str(pid), "numa_maps")), page_kib)


def read_vcpu_cpus(pid: int, root: str = "/") -> Dict[int, int]:
    """{vcpu: CPU its thread last ran on} for QEMU process ``pid``: threads named "CPU N/KVM",
    field 39 of their stat. A thread that exits while we read is skipped."""
    task_dir = _path(root, "proc", str(pid), "task")
    result: Dict[int, int] = {}
    for tid in os.listdir(task_dir):
        try:
            index = vcpu_index(_read_text(os.path.join(task_dir, tid, "comm")))
            if index is None:
                continue
            result[index] = parse_task_stat_cpu(_read_text(os.path.join(task_dir, tid, "stat")))
        except FileNotFoundError:
            continue
    return result


def read_node_cpus(root: str = "/") -> Dict[int, List[int]]:
    """{node: [cpus]} from /sys/devices/system/node/node*/cpulist (the kernel's view; libvirt's
    capabilities topology is preferred when the sampler has it)."""
    result: Dict[int, List[int]] = {}
    for path in glob.glob(_path(root, "sys/devices/system/node/node[0-9]*/cpulist")):
        node = int(os.path.basename(os.path.dirname(path))[4:])
        result[node] = parse_cpulist(_read_text(path))
    return result


_GUEST_VALUE = re.compile(rb"guest=((?:[^,]|,,)*)")


def qemu_guest_name(cmdline: bytes) -> Optional[str]:
    """The domain a QEMU started by libvirt runs: ``-name guest=<name>,debug-threads=on`` (commas in
    the name doubled, as QEMU option values do), or ``-name <name>`` from older libvirt."""
    args = cmdline.split(b"\0")
    for i, arg in enumerate(args[:-1]):
        if arg != b"-name":
            continue
        value = args[i + 1]
        if not value.startswith(b"guest="):
            return value.decode("utf-8", "replace")
        # the value runs to the first single comma; a doubled comma is a comma of the name
        m = _GUEST_VALUE.match(value)
        assert m is not None  # the pattern matches any value that starts with guest=
        return m.group(1).replace(b",,", b",").decode("utf-8", "replace")
    return None


def _cmdline_names_guest(cmdline: bytes, name: str) -> bool:
    return qemu_guest_name(cmdline) == name


def qemu_pids_by_name(root: str = "/") -> Dict[str, int]:
    """Every QEMU process under /proc by the domain name it runs: one scan of /proc, made only
    when some domain has neither a pid from the sampler nor a pid file. Not psutil.process_iter:
    its /proc is one path for the whole process, this reader's is its own ``root`` (fixture trees)."""
    try:
        entries = os.listdir(_path(root, "proc"))
    except OSError:
        return {}
    pids: Dict[str, int] = {}
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(_path(root, "proc", entry, "cmdline"), "rb") as f:
                cmdline = f.read()
        except OSError:
            continue  # gone meanwhile, or not ours to read
        if b"qemu" in cmdline.split(b"\0", 1)[0]:
            name = qemu_guest_name(cmdline)
            if name is not None:
                pids[name] = int(entry)
    return pids


def classify_error(exc: BaseException) -> str:
    """A health reason for an exception raised while reading /proc/<pid>/…"""
    if isinstance(exc, PermissionError) or getattr(exc, "errno", None) in (errno.EACCES, errno.EPERM):
        return REASON_PERMISSION
    if isinstance(exc, (FileNotFoundError, ProcessLookupError)) or getattr(exc, "errno", None) == errno.ESRCH:
        return REASON_PID_NOT_FOUND
    return REASON_READ_ERROR


EMPTY_SNAPSHOT = NumaSnapshot({}, {}, True, "", 0.0)

# uuid -> (domain name, QEMU pid when the sampler knows it)
Targets = Mapping[str, Tuple[str, Optional[int]]]


class NumaPlacementReader:
    """Background reader of per-VM NUMA placement.

    ``set_targets`` (cheap, from the scrape path) names the running domains; the thread reads each
    one when it is new, when its pid changed, or when its last read is ``interval_s`` old, and
    publishes an immutable ``NumaSnapshot``. ``snapshot()`` never waits for a read in progress.
    """

    def __init__(self, root: str = "/", interval_s: float = 30.0, tick_s: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if interval_s <= 0:
            raise ValueError("interval_s must be positive")
        self.root = root
        self.interval_s = float(interval_s)
        self.tick_s = min(float(tick_s), self.interval_s)
        self._clock = clock
        self._lock = threading.Lock()
        self._targets: Dict[str, Tuple[str, Optional[int]]] = {}
        self._snapshot = EMPTY_SNAPSHOT
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._node_cpus: Optional[Dict[int, List[int]]] = None

    # -- scrape side ---------------------------------------------------------------------------------
    def set_targets(self, targets: Targets) -> None:
        """Replace the set of domains to read; wakes the thread when a domain or pid is new."""
        new = dict(targets)
        with self._lock:
            old = self._targets
            self._targets = new
        if any(old.get(uuid) != value for uuid, value in new.items()):
            self._wake.set()

    def snapshot(self) -> NumaSnapshot:
        return self._snapshot

    # -- lifecycle -----------------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="numa-reader", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the thread; a read stuck in the kernel is abandoned (the thread is a daemon)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.refresh_once()
            except Exception:  # the reader must outlive any single bad read
                log.exception("NUMA placement refresh failed")
            self._wake.wait(self.tick_s)
            self._wake.clear()

    # -- one round -----------------------------------------------------------------------------------
    def refresh_once(self) -> NumaSnapshot:
        """Read the domains that are due, publish and return the new snapshot."""
        with self._lock:
            targets = dict(self._targets)
        previous = self._snapshot.domains
        proc_present = os.path.isdir(_path(self.root, "proc"))
        if self._node_cpus is None and proc_present:
            try:
                self._node_cpus = read_node_cpus(self.root)
            except (OSError, ValueError) as exc:
                log.warning("cannot read NUMA node cpulists under %s: %s", self.root, exc)
                self._node_cpus = {}

        placements: Dict[str, DomainPlacement] = {}
        # Filled by the first domain that needs a /proc scan: one scan per round, not one per domain.
        scanned: Dict[str, Optional[Dict[str, int]]] = {"pids": None}
        for uuid, (name, pid) in targets.items():
            if self._stop.is_set():
                return self._snapshot
            last = previous.get(uuid)
            if not proc_present:
                placements[uuid] = DomainPlacement(uuid, name, pid, None, None, self._clock(), 0.0,
                                                   REASON_NO_PROC)
                continue
            if last is not None and not self._due(last, pid):
                placements[uuid] = last
                continue
            placement = self._read_domain(uuid, name, pid, scanned)
            if placement.error:
                failures = last.failures + 1 if last is not None and last.error and last.pid == placement.pid else 1
                placement = dataclasses.replace(placement, failures=failures)
            placements[uuid] = placement

        reasons = {p.error for p in placements.values() if p.error and p.failures >= CONFIRM_FAILURES}
        reason = next((r for r in _REASON_ORDER if r in reasons), "")
        if not proc_present:
            reason = REASON_NO_PROC
        snap = NumaSnapshot(
            domains=placements,
            node_cpus=dict(self._node_cpus or {}),
            readable=not reason,
            reason=reason,
            refresh_duration_s=sum(p.duration_s for p in placements.values()),
        )
        self._snapshot = snap
        return snap

    def _due(self, last: DomainPlacement, pid: Optional[int]) -> bool:
        if pid is not None and pid != last.pid:
            return True  # the domain restarted: a new QEMU
        if last.error and last.failures < CONFIRM_FAILURES:
            return True  # one failure may be a domain starting or stopping: look again at once
        return self._clock() - last.read_monotonic_s >= self.interval_s

    def _read_domain(self, uuid: str, name: str, pid: Optional[int],
                     scanned: Dict[str, Optional[Dict[str, int]]]) -> DomainPlacement:
        start = self._clock()
        if pid is None:
            pid = read_qemu_pid(name, self.root)
        if pid is None:
            pids = scanned["pids"]
            if pids is None:
                pids = scanned["pids"] = qemu_pids_by_name(self.root)
            pid = pids.get(name)
        if pid is None:
            return DomainPlacement(uuid, name, None, None, None, start, self._clock() - start,
                                   REASON_PID_UNKNOWN)
        error = ""
        try:
            with open(_path(self.root, "proc", str(pid), "cmdline"), "rb") as f:
                cmdline = f.read()
            if not _cmdline_names_guest(cmdline, name):
                return DomainPlacement(uuid, name, pid, None, None, start, self._clock() - start,
                                       REASON_PID_MISMATCH)
        except OSError as exc:
            return DomainPlacement(uuid, name, pid, None, None, start, self._clock() - start,
                                   classify_error(exc))
        memory: Optional[Dict[int, int]] = None
        vcpus: Optional[Dict[int, int]] = None
        try:
            memory = read_numa_maps(pid, self.root)
        except (OSError, ValueError) as exc:
            error = classify_error(exc)
        try:
            vcpus = read_vcpu_cpus(pid, self.root)
        except (OSError, ValueError, IndexError) as exc:
            error = error or classify_error(exc)
        return DomainPlacement(uuid, name, pid, memory, vcpus, start, self._clock() - start, error)
