"""source.guest_agent without a guest: parsing libvirt's answer, and the reader's bookkeeping when an
agent answers, fails, hangs (marked down after the timeout, not called again while its call is out)
and answers late."""

from __future__ import annotations

import threading
import time
from typing import Any, Dict

import libvirt
import pytest

from bounds import wait_for
from fakelibvirt import libvirt_error
from virt_exporter.source.guest_agent import GuestAgentReader, parse_guest_info

pytestmark = pytest.mark.timeout(30)

INFO = {"os.id": "debian", "os.kernel-release": "6.1", "hostname": "h1", "fs.count": 2,
        "fs.0.name": "vda1", "fs.0.mountpoint": "/", "fs.0.fstype": "ext4", "fs.0.total-bytes": 100,
        "fs.0.used-bytes": 40, "fs.1.name": "sr0", "fs.1.mountpoint": "/media", "fs.1.fstype": "iso9660"}


def test_parse():
    r = parse_guest_info("u", "d", INFO, 5.0)
    assert (r.up, r.hostname, dict(r.os)) == (True, "h1", {"id": "debian", "kernel-release": "6.1"})
    assert [(f.mountpoint, f.fstype, f.total_bytes, f.used_bytes) for f in r.filesystems] == [
        ("/", "ext4", 100, 40), ("/media", "iso9660", None, None)]


class Dom:
    def __init__(self, conn: "Conn", uuid: str) -> None:
        self.conn, self.uuid = conn, uuid

    def guestInfo(self, types: int, flags: int) -> Dict[str, Any]:
        self.conn.calls[self.uuid] = self.conn.calls.get(self.uuid, 0) + 1
        behaviour = self.conn.behaviour[self.uuid]
        if behaviour == "fail":
            raise libvirt_error(libvirt.VIR_ERR_AGENT_UNRESPONSIVE, "agent not connected")
        if behaviour == "hang":
            self.conn.release.wait(20)
        return INFO


class Conn:
    def __init__(self, behaviour: Dict[str, str]) -> None:
        self.behaviour = behaviour
        self.calls: Dict[str, int] = {}
        self.release = threading.Event()

    def lookupByUUIDString(self, uuid: str) -> Dom:
        return Dom(self, uuid)

    def getLibVersion(self) -> int:
        return 9000000


def test_answering_failing_and_hanging_agents():
    conn = Conn({"ok": "ok", "bad": "fail", "hung": "hang"})
    reader = GuestAgentReader("test:///", interval_s=0.01, timeout_s=0.3, opener=lambda uri: conn)
    try:
        reader.set_targets({"ok": "vm-ok", "bad": "vm-bad", "hung": "vm-hung"})
        t0 = time.monotonic()
        reader.refresh_once()
        assert time.monotonic() - t0 < 2.0  # the hung call is not waited for past the timeout
        snap = reader.snapshot().domains
        assert snap["ok"].up and snap["ok"].hostname == "h1"
        assert not snap["bad"].up and "agent not connected" in snap["bad"].error
        assert not snap["hung"].up and "no answer within" in snap["hung"].error
        time.sleep(0.05)
        reader.refresh_once()
        assert conn.calls["hung"] == 1 and conn.calls["ok"] == 2  # not called again while its call is out
        conn.release.set()  # the agent answers at last
        wait_for(lambda: reader.snapshot().domains["hung"].up, 5, "the hung agent's answer", 0.01)
        reader.set_targets({"ok": "vm-ok"})
        assert set(reader.snapshot().domains) == {"ok"}
    finally:
        conn.release.set()
        reader.stop()


def test_no_connection_marks_every_target_down():
    def refuse(uri: str) -> Any:
        raise libvirt.libvirtError("cannot connect")

    reader = GuestAgentReader("test:///", opener=refuse)
    reader.set_targets({"a": "vm-a"})
    reader.refresh_once()
    a = reader.snapshot().domains["a"]
    assert not a.up and "cannot connect" in a.error
    reader.stop()


@pytest.mark.parametrize("interval,timeout", [(0, 1), (1, 0), (-1, 1)])
def test_bad_settings_refused(interval, timeout):
    with pytest.raises(ValueError):
        GuestAgentReader("test:///", interval_s=interval, timeout_s=timeout)
