"""libvirt cpuset strings ("0-3,^2,8") read and written in one canonical form ("0-1,3,8").

The pinning ``_info`` series carry the host CPU list as a label; one canonical spelling keeps a
series' identity when libvirt or an operator writes the same set another way ("0,1" / "0-1").
"""

from __future__ import annotations

from typing import Iterable, List


def parse_cpuset(text: str) -> List[int]:
    """The CPUs of a libvirt cpuset (ranges, single CPUs and ``^N`` exclusions), sorted.

    Raises ValueError on anything else.
    """
    include: set = set()
    exclude: set = set()
    for part in text.replace(" ", "").split(","):
        if not part:
            continue
        target = include
        if part.startswith("^"):
            target, part = exclude, part[1:]
        low, sep, high = part.partition("-")
        if not low.isdigit() or (sep and not high.isdigit()):
            raise ValueError("not a cpuset: %r" % text)
        first, last = int(low), int(high) if sep else int(low)
        if last < first:
            raise ValueError("not a cpuset: %r" % text)
        target.update(range(first, last + 1))
    return sorted(include - exclude)


def format_cpuset(cpus: Iterable[int]) -> str:
    """Sorted CPUs as libvirt prints them: runs of two or more as ``a-b``, comma-separated."""
    out: List[str] = []
    run: List[int] = []
    for cpu in sorted(set(cpus)):
        if run and cpu == run[-1] + 1:
            run.append(cpu)
            continue
        if run:
            out.append(_run(run))
        run = [cpu]
    if run:
        out.append(_run(run))
    return ",".join(out)


def _run(run: List[int]) -> str:
    return str(run[0]) if len(run) == 1 else "%d-%d" % (run[0], run[-1])


def canonical_cpuset(text: str) -> str:
    """``text`` in the canonical spelling; unparseable text is returned stripped, as written."""
    try:
        return format_cpuset(parse_cpuset(text))
    except ValueError:
        return text.strip()
