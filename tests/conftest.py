"""Fixtures for tests that need the real libvirtd + KVM test bed (see tests/testbed.py).

- `libvirtd` (session): libvirtd is running; returns the URI (qemu:///system).
- `testbed` (function): a testbed.Testbed; every guest made through it is removed afterwards,
  also when the test fails.
- `host` (function): the scripted fake libvirtd of tests/fakelibvirt.py, opened by libvirt.openReadOnly.
- `standard_guests` (session): testbed.StandardGuests(busy, idle, blank), booted, shared; do not
  stop or reconfigure them (make your own with `testbed` for that).

Tests using any of these are marked `libvirt` automatically; tests marked `libvirt` get the
daemon started for them.
"""

import signal
import sys
from pathlib import Path

import libvirt
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fakelibvirt  # noqa: E402 - the tests directory has to be on sys.path first
import testbed as tb  # noqa: E402
from skiplimit import BedSkipLimit  # noqa: E402

_LIBVIRT_FIXTURES = {"libvirtd", "testbed", "standard_guests"}


def pytest_configure(config):
    # More than a stated number of skips of bed tests fails the run (tests/skiplimit.py).
    config.pluginmanager.register(BedSkipLimit(), "bed-skip-limit")
    # A SIGTERM'd run (CI timeout) would skip fixture teardown and leave guests running; turning
    # it into KeyboardInterrupt lets pytest unwind and tear down as on Ctrl-C.
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        def _terminate(signum, frame):
            raise KeyboardInterrupt(f"signal {signum}")

        signal.signal(signal.SIGTERM, _terminate)


def pytest_collection_modifyitems(config, items):
    for item in items:
        if _LIBVIRT_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.libvirt)


def pytest_sessionfinish(session, exitstatus):
    tb.cleanup_all()


@pytest.fixture(scope="session")
def libvirtd():
    uri = tb.ensure_daemon()
    tb.gc()  # guests left behind by killed runs (only those whose owner process is gone)
    return uri


@pytest.fixture(autouse=True)
def _libvirtd_for_marked_tests(request):
    if request.node.get_closest_marker("libvirt"):
        request.getfixturevalue("libvirtd")


@pytest.fixture
def testbed(libvirtd):
    bed = tb.Testbed()
    try:
        yield bed
    finally:
        bed.cleanup()


@pytest.fixture
def host(monkeypatch):
    """The scripted libvirtd of tests/fakelibvirt.py with six domains, which libvirt.openReadOnly
    now opens (for the connection, stuck-domain and sampler unit tests)."""
    h = fakelibvirt.FakeHost(6)
    monkeypatch.setattr(libvirt, "openReadOnly", h.open)
    return h


@pytest.fixture(scope="session")
def standard_guests(libvirtd):
    bed = tb.Testbed()
    try:
        yield tb.make_standard_guests(bed)
    finally:
        bed.cleanup()
