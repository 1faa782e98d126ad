"""A limit on how often tests that need the test bed may skip in one run.

Such a test may skip only for a cause outside the exporter (a host too loaded to time, a tool not
installed), with the reason. A few of those are the price of a shared host; many in one run mean the
run did not test the product, so past the limit the session fails, listing every skip and its reason.
The limit is stated in CONTRIBUTING.md.
"""

from __future__ import annotations

from typing import List, Tuple

import pytest

# Skips of tests marked `libvirt` one run may have before it fails.
MAX_BED_SKIPS = 2


def _reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    text = str(longrepr[2]) if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
    return text[len("Skipped: "):] if text.startswith("Skipped: ") else text


class BedSkipLimit:
    """Counts the skips of bed tests (marker ``libvirt``) and fails the session above ``limit``."""

    def __init__(self, limit: int = MAX_BED_SKIPS) -> None:
        self.limit = limit
        self.skips: List[Tuple[str, str]] = []

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.skipped and not hasattr(report, "wasxfail") and "libvirt" in report.keywords:
            self.skips.append((report.nodeid, _reason(report)))

    def over(self) -> bool:
        return len(self.skips) > self.limit

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if self.over() and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter) -> None:
        if not self.over():
            return
        terminalreporter.section("bed skips over the limit", sep="=", red=True, bold=True)
        terminalreporter.line("%d tests that need the test bed skipped; at most %d may (tests/skiplimit.py):"
                              % (len(self.skips), self.limit))
        for nodeid, reason in self.skips:
            terminalreporter.line("  %s: %s" % (nodeid, reason))
