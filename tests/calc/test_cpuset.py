"""calc.cpuset: libvirt's cpuset syntax in, one canonical spelling out (as virsh vcpupin prints it)."""

import pytest

from virt_exporter.calc.cpuset import canonical_cpuset, format_cpuset, parse_cpuset


@pytest.mark.parametrize("text,cpus", [
    ("0", [0]), ("0-3", [0, 1, 2, 3]), ("0,1", [0, 1]), ("0-3,^2", [0, 1, 3]), ("3,1,2", [1, 2, 3]),
    ("0-2, 8", [0, 1, 2, 8]), ("", []),
])
def test_parse(text, cpus):
    assert parse_cpuset(text) == cpus


@pytest.mark.parametrize("text", ["a", "1-", "3-1", "-2", "1--2", "^"])
def test_parse_refuses(text):
    with pytest.raises(ValueError):
        parse_cpuset(text)


def test_format_and_canonical():
    assert format_cpuset([0, 1, 2, 5, 7, 8]) == "0-2,5,7-8"
    assert format_cpuset([4]) == "4"
    assert format_cpuset([]) == ""
    assert canonical_cpuset("0,1") == canonical_cpuset("0-1") == "0-1"
    assert canonical_cpuset(" junk ") == "junk"  # kept as written, never an exception at scrape time
