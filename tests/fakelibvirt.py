"""One fake libvirt connection for the unit tests and the replay benchmark.

``FakeConnect`` is the virConnect surface the exporter uses: host facts (getInfo, capabilities,
versions, hostname, memory), domain listing and lookup, the bulk stats calls, and the no-op
keepalive / close-callback / event registration a connection makes. What differs between users is
which domains there are and what their stats say: a subclass provides ``domains()`` and
``stats_of(dom, flags)``, and may override ``gate()`` (called before every call libvirtd answers,
to script a stopped daemon). Domains are any objects with ``UUIDString()`` and ``name()``.

``FakeHost`` is a scripted libvirtd on top of it (per-domain jobs, QEMUs and a daemon that can be
stopped and continued), for the connection, stuck-domain and sampler tests; ``connected()`` opens a
real ``Connection`` to it.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence

import libvirt

from virt_exporter.source.connection import Connection

# How long a QEMU set to answer after the retry waits for it at most (the samples' deadline is longer).
RETRY_WAIT_BOUND_S = 3.0
CAPABILITIES_ONE_CELL = ("<capabilities><host><topology><cells num='1'><cell id='0'><cpus num='2'>"
                         "<cpu id='0'/><cpu id='1'/></cpus></cell></cells></topology></host></capabilities>")


def libvirt_error(code: int, message: str = "scripted", level: int = 0) -> libvirt.libvirtError:
    """A libvirtError as libvirt raises it: ``get_error_code()`` gives ``code``."""
    e = libvirt.libvirtError(message)
    e.err = (code, 0, message, level, None, None, None, 0, 0)
    return e


def no_domain_error() -> libvirt.libvirtError:
    """The error libvirt raises for a domain that is gone (VIR_ERR_NO_DOMAIN)."""
    return libvirt_error(libvirt.VIR_ERR_NO_DOMAIN, "Domain not found", 2)


class FakeConnect:
    hostname = "fake"
    lib_version = 9000000      # 9.0.0
    hypervisor_version = 7002000
    # model, memory MiB, cpus, MHz, nodes, sockets, cores, threads (virNodeGetInfo)
    info: Sequence[Any] = ("x86_64", 4096, 2, 2400, 1, 1, 2, 1)
    capabilities = CAPABILITIES_ONE_CELL

    # --- what a subclass provides ------------------------------------------------------------------

    def domains(self) -> List[Any]:
        raise NotImplementedError

    def stats_of(self, dom: Any, flags: int) -> Dict[str, Any]:
        raise NotImplementedError

    def gate(self) -> None:
        """Called before every call libvirtd itself answers."""

    def memory_stats(self, cell: int) -> Dict[str, int]:
        return {"total": 4 << 20, "free": 1 << 20}

    # --- virConnect --------------------------------------------------------------------------------

    def listAllDomains(self, flags: int = 0) -> List[Any]:
        self.gate()
        return self.domains()

    def numOfDomains(self) -> int:
        self.gate()
        return len(self.domains())

    def lookupByUUIDString(self, uuid: str) -> Any:
        self.gate()
        for dom in self.domains():
            if dom.UUIDString() == uuid:
                return dom
        raise no_domain_error()

    def getAllDomainStats(self, stats: int = 0, flags: int = 0) -> List[Any]:
        return self.domainListGetStats(self.listAllDomains(), stats, flags)

    def domainListGetStats(self, doms: List[Any], stats: int = 0, flags: int = 0) -> List[Any]:
        self.gate()
        return [(d, self.stats_of(d, flags)) for d in doms]

    def getMemoryStats(self, cell: int, flags: int = 0) -> Dict[str, int]:
        self.gate()
        return self.memory_stats(cell)

    def listAllStoragePools(self, flags: int = 0) -> List[Any]:
        self.gate()
        return []

    def getInfo(self) -> List[Any]:
        return list(self.info)

    def getCapabilities(self) -> str:
        return self.capabilities

    def getLibVersion(self) -> int:
        self.gate()
        return self.lib_version

    def getVersion(self) -> int:
        return self.hypervisor_version

    def getHostname(self) -> str:
        return self.hostname

    def setKeepAlive(self, *a: Any) -> None:
        pass

    def registerCloseCallback(self, *a: Any) -> None:
        pass

    def unregisterCloseCallback(self) -> None:
        pass

    def domainEventRegisterAny(self, *a: Any) -> int:
        return 1

    def domainEventDeregisterAny(self, *a: Any) -> None:
        pass

    def close(self) -> int:
        return 0


def open_read_only_patch(connect: Any, scheme: str) -> Any:
    """A libvirt.openReadOnly that answers URIs of ``scheme`` with ``connect()`` and others as before."""
    real_open = libvirt.openReadOnly

    def open_read_only(uri: Optional[str] = None) -> Any:
        if uri and uri.startswith(scheme + ":"):
            return connect()
        return real_open(uri)

    return open_read_only


# --- a scripted libvirtd: domains with jobs, QEMUs that can stop, a daemon that can stop ----------

NOWAIT = libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_NOWAIT


class FakeVM:
    def __init__(self, n: int) -> None:
        self.uuid = "%08x-0000-4000-8000-%012x" % (n, n)
        self.name = "vm%d" % n
        self.id = n
        self.job = threading.Lock()
        self.answering = threading.Event()  # cleared: the QEMU is stopped (SIGSTOP)
        self.answering.set()
        self.delay_s = 0.0                  # one-off extra monitor time (a slow, not stuck, QEMU)
        # Set to an unset Event: a slow QEMU that answers only once a NOWAIT call found its job held
        # (the caller judged the call late and asked again), so "late" does not hang on the host's speed.
        self.answer_after_retry: Optional[threading.Event] = None
        self.release_job_on_retry = False   # the job is held by another client until a NOWAIT call
        self.cpu_ns = 1000 * n
        self.calls_blocked = 0              # calls that reached the QEMU while it was stopped


class FakeHost:
    """libvirtd: domains, per-domain jobs, a stop switch for each QEMU and one for the daemon."""

    def __init__(self, n_domains: int, work_s: float = 0.005) -> None:
        self.vms = {vm.uuid: vm for vm in (FakeVM(i + 1) for i in range(n_domains))}
        self.work_s = work_s
        self.alive = threading.Event()      # cleared: libvirtd stopped (SIGSTOP)
        self.alive.set()
        self.wrong_connection = 0           # calls naming domains listed on another connection
        self.stats_calls = 0
        self.opened = 0
        self.broken = False                 # set: calls waiting on a stopped QEMU fail (connection lost)
        self.calls_lost = 0                 # calls failed that way
        # Called when a ping (numOfDomains) arrives, before libvirtd answers it (a stall that lasts
        # until the exporter asked whether libvirtd itself is slow).
        self.on_ping: Optional[Callable[[], None]] = None
        # Called with each domain whose stats a call has just read (events fired during a sample).
        self.after_stats: Optional[Callable[[FakeVM], None]] = None
        self.lock = threading.Lock()

    def open(self, uri: Optional[str] = None) -> "FakeConn":
        self.alive.wait()
        with self.lock:
            self.opened += 1
        return FakeConn(self)

    def stop_qemu(self, vm: FakeVM) -> None:
        vm.answering.clear()

    def cont_qemu(self, vm: FakeVM) -> None:
        vm.answering.set()

    def hold_job_until_retry(self, vm: FakeVM) -> None:
        """Another client holds the domain's job until a NOWAIT call finds it held (the exporter
        judged its call late and asked again), then lets go."""
        vm.job.acquire()
        vm.release_job_on_retry = True


class FakeDom:
    def __init__(self, vm: FakeVM, conn: "FakeConn") -> None:
        self.vm, self.conn = vm, conn

    def UUIDString(self) -> str:
        return self.vm.uuid

    def name(self) -> str:
        return self.vm.name

    def ID(self) -> int:
        return self.vm.id

    def XMLDesc(self, flags: int = 0) -> str:
        self.conn.gate()
        return ("<domain type='kvm'><name>%s</name><uuid>%s</uuid><memory>65536</memory><vcpu>1</vcpu>"
                "<os><type arch='x86_64' machine='pc'>hvm</type></os><devices/></domain>"
                % (self.vm.name, self.vm.uuid))


class FakeConn(FakeConnect):
    _ids = itertools.count(1)

    def __init__(self, host: FakeHost) -> None:
        self.host = host
        self.number = next(self._ids)

    def gate(self) -> None:
        self.host.alive.wait()

    def domains(self) -> List[FakeDom]:
        return [FakeDom(vm, self) for vm in list(self.host.vms.values())]

    def numOfDomains(self) -> int:
        if self.host.on_ping is not None:
            self.host.on_ping()
        return super().numOfDomains()

    # stats: the QEMU monitor is reached only with the domain's job held
    def domainListGetStats(self, doms: List[FakeDom], stats: int = 0, flags: int = 0) -> List[Any]:
        if any(d.conn is not self for d in doms):
            with self.host.lock:
                self.host.wrong_connection += 1
        return super().domainListGetStats([d for d in doms if d.vm.uuid in self.host.vms], stats, flags)

    def stats_of(self, dom: FakeDom, flags: int) -> Dict[str, Any]:
        vm = dom.vm
        with self.host.lock:
            self.host.stats_calls += 1
        stats: Dict[str, Any] = {"state.state": 1, "state.reason": 1, "cpu.time": vm.cpu_ns,
                                 "balloon.current": 65536, "vcpu.current": 1, "vcpu.maximum": 1,
                                 "net.count": 0, "block.count": 1, "block.0.name": "vda",
                                 "block.0.path": "/img/%s.qcow2" % vm.name}
        if not vm.job.acquire(blocking=not flags & NOWAIT):
            if vm.answer_after_retry is not None:
                vm.answer_after_retry.set()
            if vm.release_job_on_retry:
                vm.release_job_on_retry = False
                vm.job.release()
            return stats  # NOWAIT and the job is held: what libvirtd has without the monitor
        try:
            delay, vm.delay_s = vm.delay_s, 0.0
            time.sleep(self.host.work_s + delay)
            retried = vm.answer_after_retry
            if retried is not None:
                retried.wait(RETRY_WAIT_BOUND_S)
            if not vm.answering.is_set():
                with self.host.lock:
                    vm.calls_blocked += 1
            while not vm.answering.wait(0.01):  # a stopped QEMU: the call waits here, holding the job
                if self.host.broken:
                    with self.host.lock:
                        self.host.calls_lost += 1
                    raise libvirt.libvirtError("Cannot recv data: Connection reset by peer")
            stats.update({"block.0.rd.reqs": 1, "block.0.allocation": 0, "block.0.capacity": 1 << 30})
        finally:
            vm.job.release()
        if self.host.after_stats is not None:
            self.host.after_stats(vm)
        return stats


@contextlib.contextmanager
def connected(lanes: int = 3, **kw: Any) -> Iterator[Connection]:
    conn = Connection("fake:///", lanes=lanes, **kw)
    conn.start(wait_s=5.0)
    assert conn.up
    try:
        yield conn
    finally:
        conn.stop()

