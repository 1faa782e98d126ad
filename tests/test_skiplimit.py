"""The bed-skip limit (tests/skiplimit.py), run on a throw-away suite with pytester, and the limit this
very run has: the one CONTRIBUTING.md states."""

import re
from pathlib import Path

import pytest

from skiplimit import MAX_BED_SKIPS, BedSkipLimit

pytest_plugins = ["pytester"]

SUITE = '''
import pytest

@pytest.mark.libvirt
@pytest.mark.parametrize("n", range({bed}))
def test_bed(n):
    pytest.skip("host too loaded")

@pytest.mark.parametrize("n", range({other}))
def test_other(n):
    pytest.skip("no curl")

def test_passes():
    pass
'''

CONFTEST = '''
from skiplimit import BedSkipLimit

def pytest_configure(config):
    config.addinivalue_line("markers", "libvirt: bed")
    config.pluginmanager.register(BedSkipLimit(2), "bed-skip-limit")
'''


@pytest.mark.parametrize("bed, other, fails", [(2, 5, False), (3, 1, True)])
def test_session_fails_past_the_limit_of_bed_skips(pytester, bed, other, fails):
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(SUITE.format(bed=bed, other=other))
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, skipped=bed + other)
    assert result.ret == (pytest.ExitCode.TESTS_FAILED if fails else pytest.ExitCode.OK)
    summary = "3 tests that need the test bed skipped; at most 2 may"
    if fails:
        result.stdout.fnmatch_lines(["*" + summary + "*", "*::test_bed?2?: host too loaded"])
    else:
        assert summary not in result.stdout.str()


NUMBER_WORDS = {"no": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5}


def test_this_run_counts_bed_skips_against_the_limit_contributing_states(pytestconfig):
    plugin = pytestconfig.pluginmanager.get_plugin("bed-skip-limit")
    assert isinstance(plugin, BedSkipLimit), "tests/conftest.py does not register the bed-skip limit"
    text = " ".join((Path(__file__).resolve().parents[1] / "CONTRIBUTING.md").read_text().split())
    stated = re.search(r"More than (\w+) such skips \(tests marked `libvirt`\) in one run fail it", text)
    assert stated, "CONTRIBUTING.md no longer states the limit"
    word = stated.group(1)
    assert plugin.limit == MAX_BED_SKIPS == (int(word) if word.isdigit() else NUMBER_WORDS.get(word)), word
