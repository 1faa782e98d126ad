"""The bed-skip limit (tests/skiplimit.py), run on a throw-away suite with pytester."""

import pytest

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
