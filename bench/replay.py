"""Record real bulk stats from the test bed and replay them, scaled to N domains, through the
exporter's own code path (connection → sampler → collectors → exposition).

Only the libvirt connection object is replaced: ``libvirt.openReadOnly`` answers ``replay:`` URIs
with a ReplayConnection (the tests' fake libvirt connection, tests/fakelibvirt.py) that serves the
recorded dicts. Used by the scale and idle benchmarks; not
part of the product.

    python bench/replay.py record FILE            # from qemu:///system
    python bench/replay.py serve FILE N [exporter flags…]
"""

from __future__ import annotations

import json
import sys
import uuid as uuidlib
from pathlib import Path
from typing import Any, Dict, List

import libvirt

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))
from fakelibvirt import FakeConnect, open_read_only_patch  # noqa: E402  (tests/ is on the path now)

GROUPS = (libvirt.VIR_DOMAIN_STATS_STATE | libvirt.VIR_DOMAIN_STATS_CPU_TOTAL | libvirt.VIR_DOMAIN_STATS_BALLOON
          | libvirt.VIR_DOMAIN_STATS_VCPU | libvirt.VIR_DOMAIN_STATS_INTERFACE | libvirt.VIR_DOMAIN_STATS_BLOCK)


def record(path: str, uri: str = "qemu:///system") -> None:
    conn = libvirt.openReadOnly(uri)
    flags = libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_BACKING | libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_ACTIVE
    entries = []
    for dom, stats in conn.getAllDomainStats(GROUPS, flags):
        entries.append({"name": dom.name(), "uuid": dom.UUIDString(), "xml": dom.XMLDesc(0), "stats": stats})
    doc = {
        "info": conn.getInfo(),
        "capabilities": conn.getCapabilities(),
        "memory": conn.getMemoryStats(-1, 0),
        "cells": {str(c): conn.getMemoryStats(c, 0) for c in range(conn.getInfo()[4])},
        "domains": entries,
    }
    Path(path).write_text(json.dumps(doc))
    print("recorded %d running domains into %s" % (len(entries), path))


class ReplayDomain:
    """One replayed domain. Like a virDomain it holds no stats or XML of its own: both are made from
    the recorded domain it copies when asked (the exporter's measured memory is its own, not a
    replay's copy of N domains' stats that libvirt-python never keeps)."""

    __slots__ = ("_name", "_uuid", "_src", "asked")

    def __init__(self, name: str, uuid: str, src: Dict[str, Any]) -> None:
        self._name, self._uuid, self._src = name, uuid, src
        self.asked = 0

    def name(self) -> str:
        return self._name

    def UUIDString(self) -> str:
        return self._uuid

    def XMLDesc(self, flags: int = 0) -> str:
        return self._src["xml"].replace(self._src["name"], self._name).replace(self._src["uuid"], self._uuid)

    def stats(self) -> Dict[str, Any]:
        """Fresh key strings and values on every call, as libvirt-python builds them; the CPU
        counters move as on a busy host, so rates and exposition see changing values."""
        self.asked += 1
        out = {(k + ".")[:-1]: (v + 0 if isinstance(v, int) else v) for k, v in self._src["stats"].items()}
        for key in ("cpu.time", "cpu.user", "cpu.system"):
            if key in out:
                out[key] += 10_000_000 * self.asked
        return out


class ReplayConnection(FakeConnect):
    """Serves N copies of the recorded domains."""

    hostname = "replay"

    def __init__(self, doc: Dict[str, Any], n_domains: int) -> None:
        self.doc = doc
        self.calls = 0
        self.info = list(doc["info"])
        self.capabilities = doc["capabilities"]
        recorded = doc["domains"]
        self._domains: List[ReplayDomain] = [
            ReplayDomain("replay-%05d" % i, str(uuidlib.UUID(int=i + 1)), recorded[i % len(recorded)])
            for i in range(n_domains)]

    def domains(self) -> List[ReplayDomain]:
        return list(self._domains)

    def domainListGetStats(self, doms: List[ReplayDomain], stats: int = 0, flags: int = 0) -> List[tuple]:
        self.calls += 1
        return super().domainListGetStats(doms, stats, flags)

    def stats_of(self, dom: ReplayDomain, flags: int) -> Dict[str, Any]:
        return dom.stats()

    def memory_stats(self, cell: int) -> Dict[str, int]:
        return dict(self.doc["memory"] if cell == -1 else self.doc["cells"].get(str(cell), self.doc["memory"]))


def install(path: str, n_domains: int) -> ReplayConnection:
    """Make libvirt.openReadOnly('replay:///…') return one shared ReplayConnection."""
    replay = ReplayConnection(json.loads(Path(path).read_text()), n_domains)
    libvirt.openReadOnly = open_read_only_patch(lambda: replay, "replay")
    return replay


def main(argv: List[str]) -> int:
    if argv[:1] == ["record"]:
        record(argv[1])
        return 0
    if argv[:1] == ["serve"]:
        install(argv[1], int(argv[2]))
        from virt_exporter.cli import main as exporter_main

        return exporter_main(["--libvirt.uri", "replay:///bench"] + argv[3:])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
