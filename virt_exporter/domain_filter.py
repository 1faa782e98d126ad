"""Which domains a scrape exports: ``--libvirt.domain-include`` / ``--libvirt.domain-exclude``.

Regular expressions matched anywhere in the domain name (Python ``re.search``, as node_exporter's
``--collector.*-include``/``-exclude`` use Go's MatchString): anchor them with ^…$ for whole names.
A domain is exported when it matches the include pattern (if any) and does not match the exclude
pattern. The filter cuts what is exported and read from /proc; libvirt is still asked for every
domain, because the host's hypervisor overhead is busy CPU minus *every* VM's CPU.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Optional, Pattern

from .sample import Sample


def compile_pattern(flag: str, text: Optional[str]) -> Optional[Pattern[str]]:
    """The compiled pattern of a flag, or ValueError naming the flag and what is wrong."""
    if text is None or text == "":
        return None
    try:
        return re.compile(text)
    except re.error as e:
        raise ValueError("%s %r is not a valid regular expression: %s" % (flag, text, e)) from None


@dataclasses.dataclass(frozen=True)
class DomainFilter:
    include: Optional[Pattern[str]] = None
    exclude: Optional[Pattern[str]] = None

    @property
    def active(self) -> bool:
        return self.include is not None or self.exclude is not None

    def keeps(self, name: str) -> bool:
        if self.include is not None and self.include.search(name) is None:
            return False
        return self.exclude is None or self.exclude.search(name) is None

    def apply(self, sample: Optional[Sample]) -> Optional[Sample]:
        """The sample with only the exported domains (the same object when nothing is cut)."""
        return None if sample is None else self.apply_to(sample)

    def apply_to(self, sample: Sample) -> Sample:
        """apply() for a sample that is there."""
        if not self.active:
            return sample
        kept = {u: d for u, d in sample.domains.items() if self.keeps(d.name)}
        if len(kept) == len(sample.domains):
            return sample
        return dataclasses.replace(sample, domains=kept,
                                   qemu_pids={u: p for u, p in sample.qemu_pids.items() if u in kept},
                                   unresponsive=frozenset(u for u in sample.unresponsive
                                                          if u in kept or u not in sample.domains))


NO_FILTER = DomainFilter()
