"""The two-hypervisor bed: the host's libvirt 9 / QEMU 7.2 and a second hypervisor, Debian 13's
libvirt 11 / QEMU 10 in a podman container (scripts/hypervisor2.sh), sharing the test bed's image
directory at the same path. The session fixture brings the second one up on demand (about a minute
the first time, seconds once its image is cached) and leaves it running for later runs.

Guests are made on the host through tests/testbed.py (and so removed by it); a guest that is on the
second hypervisor when its test ends is destroyed there first.
"""

from __future__ import annotations

import re
import subprocess
import threading
import time
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

import libvirt
import pytest

import testbed as tb
from exporterproc import ExporterProcess, free_port
from virt_exporter.mixin.config import FOR, OPTIONAL_GROUPS, parse_config
from virt_exporter.mixin.rules import rule_files

REPO = Path(__file__).resolve().parents[2]
HOST_URI = tb.URI
UP_TIMEOUT_S = 900


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "/migration/" in str(item.fspath):
            item.add_marker(pytest.mark.migration)
            item.add_marker(pytest.mark.libvirt)


@pytest.fixture(scope="session")
def hv2(libvirtd) -> str:
    """The second hypervisor's URI (qemu+tcp://127.0.0.1:<port>/system), brought up if needed."""
    p = subprocess.run(["bash", str(REPO / "scripts/hypervisor2.sh"), "up"], capture_output=True, text=True,
                       timeout=UP_TIMEOUT_S)
    assert p.returncode == 0, "scripts/hypervisor2.sh up failed:\n%s\n%s" % (p.stdout[-2000:], p.stderr[-3000:])
    uri = p.stdout.strip().splitlines()[-1]
    assert re.match(r"^qemu\+tcp://127\.0\.0\.1:\d+/system$", uri), uri
    return uri


def virsh_at(uri: str, *args: str, check: bool = True, timeout: float = 120) -> str:
    p = subprocess.run(["virsh", "-q", "-c", uri, *args], capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError("virsh -c %s %s failed: %s" % (uri, " ".join(args), p.stderr.strip()))
    return p.stdout


def domstats_at(uri: str, name: str, *flags: str) -> Dict[str, object]:
    return tb.parse_domstats(virsh_at(uri, "domstats", "--raw", *flags, name)).get(name, {})


def running_at(uri: str) -> List[str]:
    return virsh_at(uri, "list", "--name").split()


def migrate_argv(name: str, src: str, dst: str, bandwidth_mib_s: Optional[int] = None) -> List[str]:
    """`virsh migrate --live` from src to dst, all on loopback: the destination's QEMU listens on
    127.0.0.1 (--listen-address) and the source sends there (--migrateuri). --unsafe: the disks are
    plain files in a shared directory, which libvirt cannot tell is safe without a cache mode."""
    argv = ["virsh", "-c", src, "migrate", "--live", "--unsafe", name, dst,
            "--migrateuri", "tcp://127.0.0.1", "--listen-address", "127.0.0.1"]
    if bandwidth_mib_s:
        argv += ["--bandwidth", str(bandwidth_mib_s)]
    return argv


def migrate(name: str, src: str, dst: str, bandwidth_mib_s: Optional[int] = None, timeout_s: float = 120) -> float:
    """Migrate and wait; returns how long it took."""
    started = time.monotonic()
    p = subprocess.run(migrate_argv(name, src, dst, bandwidth_mib_s), capture_output=True, text=True,
                       timeout=timeout_s)
    assert p.returncode == 0, "migration of %s from %s to %s failed: %s" % (name, src, dst, p.stderr.strip())
    return time.monotonic() - started


@pytest.fixture
def bed(libvirtd, hv2) -> Iterator[tb.Testbed]:
    """A Testbed whose guests are destroyed on the second hypervisor first when they are there."""
    testbed = tb.Testbed()
    try:
        yield testbed
    finally:
        there = set(running_at(hv2))
        for guest in testbed.guests:
            if guest.name in there:
                virsh_at(hv2, "destroy", guest.name, check=False)
        testbed.cleanup()


def exporter_at(uri: str, *extra: str) -> ExporterProcess:
    """An exporter reading ``uri``, a fresh sample per scrape, job statistics read every 0.25 s."""
    return ExporterProcess(["--libvirt.uri", uri, "--libvirt.min-interval", "0", "--collector.job.interval", "0.25",
                            *extra])


class Churn:
    """Lifecycle events of domains that are not this test's, on both hypervisors: the host is shared
    with other tests' guests, and libvirtd holds a domain's lock while its QEMU exits, stalling every
    call that lists domains (any client's, ours included). A scrape that overlaps a foreign guest's
    stop is excused from the duration bound (and counted)."""

    def __init__(self, uris: List[str], ours: List[str]) -> None:
        self.ours = set(ours)
        self.events: List[Tuple[float, str, int]] = []
        self._stop = threading.Event()
        self._conns = []
        tb_loop_started()
        for uri in uris:
            conn = libvirt.openReadOnly(uri)
            conn.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._on_event, None)
            self._conns.append(conn)

    def _on_event(self, _conn, dom, event, _detail, _opaque) -> None:
        if dom.name() not in self.ours:
            self.events.append((time.monotonic(), dom.name(), event))

    def overlaps(self, start: float, end: float, margin_s: float = 2.5) -> bool:
        return any(start - margin_s <= at <= end + margin_s for at, _n, _e in self.events)

    def close(self) -> None:
        for conn in self._conns:
            try:
                conn.close()
            except libvirt.libvirtError:
                pass


_loop_lock = threading.Lock()
_loop_started = False


def tb_loop_started() -> None:
    """libvirt's default event loop, once per process, on a daemon thread."""
    global _loop_started
    with _loop_lock:
        if _loop_started:
            return
        libvirt.virEventRegisterDefaultImpl()

        def run() -> None:
            while True:
                libvirt.virEventRunDefaultImpl()

        threading.Thread(target=run, name="libvirt-events", daemon=True).start()
        _loop_started = True


def start_fleet_prometheus(workdir: Path, targets: List[str], rule_files: List[Path]):
    """A real Prometheus with contrib's scrape config (file_sd, instance = the host part of the
    address), scraping and evaluating every second. Both exporters listen on loopback: name one
    target ``localhost:<port>`` and the other ``127.0.0.1:<port>`` and they are two instances."""
    import yaml

    from perfmon.promstack import PROMETHEUS, Process

    workdir.mkdir(parents=True, exist_ok=True)
    config = yaml.safe_load((REPO / "contrib/prometheus/prometheus.yml").read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config["rule_files"] = [str(p) for p in rule_files]
    config.pop("alerting", None)
    (scrape,) = config["scrape_configs"]
    scrape["scrape_timeout"] = "1s"
    sd = workdir / "virt-exporter-fleet.yml"
    sd.write_text(yaml.safe_dump([{"targets": targets}]))
    scrape["file_sd_configs"] = [{"files": [str(sd)], "refresh_interval": "1s"}]
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    port = free_port()
    argv = [PROMETHEUS, "--config.file=%s" % (workdir / "prometheus.yml"),
            "--storage.tsdb.path=%s" % (workdir / "data"), "--web.listen-address=127.0.0.1:%d" % port]
    return Process("prometheus", argv, workdir / "prometheus.log", "http://127.0.0.1:%d/-/ready" % port).start()


def rules_copy(tmp_path: Path, name: str, thresholds: Optional[Dict[str, float]] = None) -> Path:
    """A test copy of alerts/<name>.rules.yml, generated by the mixin with its knobs changed, every
    optional group on and every `for` 0s."""
    doc = {"groups": dict.fromkeys(OPTIONAL_GROUPS, True), "for": dict.fromkeys(FOR, "0s"),
           "thresholds": dict(thresholds or {})}
    path = tmp_path / ("%s.rules.yml" % name)
    path.write_text(rule_files(parse_config(doc))["%s.rules.yml" % name])
    return path
