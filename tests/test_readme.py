"""The user docs: docs/metrics.md's tables are generated from the code (this fails when they are
stale), the README stays short, and every relative link in README.md, CONTRIBUTING.md and docs/*.md
points at a file (and heading) that exists."""

import re
from pathlib import Path
from typing import Iterator, List, Set, Tuple

import pytest

from virt_exporter import catalogue

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
METRICS = REPO / "docs" / "metrics.md"
README_MAX_LINES = 170
DOCS = [README, REPO / "CONTRIBUTING.md", *sorted((REPO / "docs").glob("*.md"))]
# [text](target) and ![alt](target), skipping code spans and fenced blocks (see _prose).
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def test_metric_reference_tables_are_current():
    text = METRICS.read_text(encoding="utf-8")
    assert catalogue.updated_document(text) == text, \
        "docs/metrics.md tables are stale: run .venv/bin/python -m virt_exporter.catalogue --update"


def test_catalogue_update_targets_the_metric_reference():
    assert catalogue.METRICS_DOC == METRICS


def test_a_stale_table_is_caught():
    # The check above must be able to fail: drop one row and it no longer matches.
    text = METRICS.read_text(encoding="utf-8")
    row = next(line for line in text.splitlines() if line.startswith("| `libvirt_up`"))
    stale = text.replace(row + "\n", "")
    assert catalogue.updated_document(stale) != stale


def test_metric_reference_lists_every_metric_of_the_contract():
    # metrics.md is the contract between exporter, dashboards and alerts.
    text = METRICS.read_text(encoding="utf-8")
    for name in ("libvirt_up", "libvirt_domain_cpu_seconds_total", "libvirt_domain_block_read_bytes_total",
                 "libvirt_domain_interface_receive_bytes_total", "libvirt_exporter_domain_unresponsive",
                 "libvirt_perfmon_alarms_total"):
        assert "`%s`" % name in text, name


def test_readme_is_short():
    lines = len(README.read_text(encoding="utf-8").splitlines())
    assert lines <= README_MAX_LINES, "README.md has %d lines; move detail into docs/" % lines


def _prose(text: str) -> str:
    """The text without fenced code blocks and inline code, where brackets are not links."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`", "", text)


def _anchors(path: Path) -> Set[str]:
    """GitHub's anchors for the headings of a Markdown file."""
    out = set()
    for line in _prose(path.read_text(encoding="utf-8")).splitlines():
        m = re.match(r"#{1,6}\s+(.*)", line)
        if m:
            slug = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-")
            out.add(slug)
    return out


def _relative_links(path: Path) -> Iterator[Tuple[str, Path, str]]:
    for target in LINK.findall(_prose(path.read_text(encoding="utf-8"))):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        resolved = (path.parent / file_part).resolve() if file_part else path
        yield target, resolved, anchor


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_point_at_existing_files_and_headings(doc: Path):
    if not doc.exists():
        pytest.fail("%s is missing" % doc.relative_to(REPO))
    broken: List[str] = []
    for target, resolved, anchor in _relative_links(doc):
        if not resolved.exists():
            broken.append("%s (no such file)" % target)
        elif anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved):
            broken.append("%s (no such heading)" % target)
    assert not broken, broken


def test_link_check_sees_a_broken_link(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# Title\n[ok](#title) [gone](missing.md) [bad](#nowhere) `[code](x.md)`\n")
    found = [(t, r.exists(), a in _anchors(r) if a else True) for t, r, a in _relative_links(page)]
    assert found == [("#title", True, True), ("missing.md", False, True), ("#nowhere", True, False)]
