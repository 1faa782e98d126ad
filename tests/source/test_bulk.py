"""The bulk call's answer handling, without libvirtd: compaction order, and memory let go early."""

from __future__ import annotations

import gc
import sys
import weakref
from typing import Optional

import libvirt

from virt_exporter.source import bulk


class _Stats(dict):
    """A plain dict that can be weakly referenced (libvirt-python gives plain dicts)."""


class _Dom:
    def __init__(self, n: int, raw_refs: list, alive_seen: list) -> None:
        self.n, self.raw_refs, self.alive_seen = n, raw_refs, alive_seen

    def UUIDString(self) -> str:
        gc.collect()
        # raw answers of the entries before this one that still exist while it is compacted
        self.alive_seen.append(sum(1 for r in self.raw_refs[:self.n] if r() is not None))
        return "uuid-%d" % self.n

    def name(self) -> str:
        return "dom-%d" % self.n


class _Conn:
    """A virConnect whose getAllDomainStats gives the answer it was made with, once, keeping no reference."""

    def __init__(self, answer: list) -> None:
        self.answer: Optional[list] = answer

    def getAllDomainStats(self, stats: int, flags: int) -> list:  # noqa: N802 - libvirt's name
        answer, self.answer = self.answer, None
        assert answer is not None
        return answer


def read(answer: list) -> bulk.RawStats:
    return bulk.get_all_domain_stats(_Conn(answer), ["state", "cpu-total"], backing=False)


def test_compacting_keeps_order_and_lets_each_raw_answer_go():
    raw_refs: list = []
    alive: list = []
    answer = []
    for n in range(5):
        stats = _Stats({"state.state": libvirt.VIR_DOMAIN_RUNNING, "cpu.time": n})
        raw_refs.append(weakref.ref(stats))
        answer.append((_Dom(n, raw_refs, alive), stats))
    del stats

    out = read(answer)

    assert [(uuid, name, st["cpu.time"]) for _d, uuid, name, st in out] == [
        ("uuid-%d" % n, "dom-%d" % n, n) for n in range(5)]
    assert alive == [0] * 5, "raw answers of entries already compacted were still held"
    assert all(r() is None for r in raw_refs)


def test_compacted_keys_are_interned_and_shut_off_domains_keep_only_state():
    running = {("cpu" + ".time")[:]: 5, "state.state": libvirt.VIR_DOMAIN_RUNNING}
    off = {"state.state": libvirt.VIR_DOMAIN_SHUTOFF, "state.reason": 1, "cpu.time": 99, "balloon.maximum": 1}
    (_d1, _u1, _n1, st_run), (_d2, _u2, _n2, st_off) = read(
        [(_Dom(1, [], []), running), (_Dom(2, [], []), off)])
    assert st_run == running
    assert all(k is sys.intern(k) for k in st_run)
    assert st_off == {"state.state": libvirt.VIR_DOMAIN_SHUTOFF, "state.reason": 1}
