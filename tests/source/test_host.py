"""The host readers: /proc/stat parsed by us, network devices and filesystem usage through psutil,
each compared with the kernel's own text or statvfs read around it."""

import os

import pytest

from virt_exporter.source import host

PROC_STAT = """\
cpu  100 2 30 400 5 6 7 8 0 0
cpu0 60 1 20 200 3 4 5 8 0 0
cpu2 40 1 10 200 2 2 2 0 0 0
intr 12345 0 0
ctxt 999
cpu_not_a_cpu_line_after_the_block 1 2 3
"""


def test_proc_stat_keeps_the_real_cpu_numbers_and_seven_columns():
    parsed = host.parse_proc_stat(PROC_STAT)
    assert parsed.aggregate.busy == 132 and parsed.aggregate.total == 550  # steal (8) is not counted
    assert sorted(parsed.per_cpu) == [0, 2]  # cpu1 is offline: cpu2 stays cpu2
    assert parsed.per_cpu[2].user == 40 and parsed.per_cpu[2].softirq == 2


def test_proc_stat_with_few_columns_and_without_aggregate():
    assert host.parse_proc_stat("cpu 1 2 3 4\n").aggregate.total == 10  # very old kernels
    with pytest.raises(ValueError):
        host.parse_proc_stat("cpu0 1 2 3 4 5 6 7\n")


def _proc_stat_busy_and_total():
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:8]]
    return sum(fields[:3]), sum(fields)


def test_read_proc_stat_matches_proc_stat_read_around_it():
    busy_before, total_before = _proc_stat_busy_and_total()
    parsed = host.read_proc_stat()
    busy_after, total_after = _proc_stat_busy_and_total()
    assert busy_before <= parsed.aggregate.busy <= busy_after
    assert total_before <= parsed.aggregate.total <= total_after
    with open("/proc/stat") as f:
        cpus = {int(line.split()[0][3:]) for line in f if line.startswith("cpu") and line[3].isdigit()}
    assert set(parsed.per_cpu) == cpus


def _net_dev_text():
    counters = {}
    with open("/proc/net/dev") as f:
        for line in f.read().splitlines()[2:]:
            name, _, rest = line.partition(":")
            fields = [int(v) for v in rest.split()]
            counters[name.strip()] = (fields[0], fields[1], fields[8], fields[9])
    return counters


def test_read_net_dev_matches_proc_net_dev_read_around_it():
    before = _net_dev_text()
    ours = host.read_net_dev()
    after = _net_dev_text()
    assert "lo" in ours
    for name in set(before) & set(after):
        got = ours[name]
        got_tuple = (got.rx_bytes, got.rx_packets, got.tx_bytes, got.tx_packets)
        for low, value, high in zip(before[name], got_tuple, after[name]):
            assert low <= value <= high, (name, before[name], got_tuple, after[name])


def test_fs_used_fraction_is_dfs_used_over_used_plus_available(tmp_path):
    st = os.statvfs(tmp_path)
    used = (st.f_blocks - st.f_bfree) * st.f_frsize
    expected = used / (used + st.f_bavail * st.f_frsize)
    # Another writer on the filesystem can move it between the two reads, never by a whole percent.
    assert host.fs_used_fraction(str(tmp_path)) == pytest.approx(expected, abs=0.01)


# --- the CPU model --------------------------------------------------------------------------------

CAPABILITIES = """<capabilities><host><uuid>x</uuid><cpu><arch>x86_64</arch><model>Skylake-Server-IBRS</model>
<vendor>Intel</vendor></cpu></host></capabilities>"""
CAPABILITIES_NO_MODEL = "<capabilities><host><cpu><arch>aarch64</arch></cpu></host></capabilities>"


def _root_with_cpuinfo(tmp_path, text):
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc" / "cpuinfo").write_text(text)
    return str(tmp_path)


def test_cpu_model_is_cpuinfo_model_name_before_libvirts_cpu_map(tmp_path):
    root = _root_with_cpuinfo(tmp_path, "processor\t: 0\nvendor_id\t: GenuineIntel\n"
                                        "model\t\t: 85\nmodel name\t: Intel(R) Xeon(R) Gold 6248  CPU @ 2.50GHz\n"
                                        "processor\t: 1\nmodel name\t: Intel(R) Xeon(R) Gold 6248 CPU @ 2.50GHz\n")
    # "model" (the family's model number) is not "model name"; inner runs of blanks collapse as lscpu's do
    assert host.host_cpu_model(CAPABILITIES, "x86_64", root) == "Intel(R) Xeon(R) Gold 6248 CPU @ 2.50GHz"


def test_cpu_model_falls_back_to_libvirt_then_to_the_arch(tmp_path):
    root = _root_with_cpuinfo(tmp_path, "processor\t: 0\nBogoMIPS\t: 50.00\nCPU part\t: 0xd0c\n")  # aarch64
    assert host.host_cpu_model(CAPABILITIES, "x86_64", root) == "Skylake-Server-IBRS"
    assert host.host_cpu_model(CAPABILITIES_NO_MODEL, "aarch64", root) == "aarch64"
    assert host.host_cpu_model(CAPABILITIES_NO_MODEL, "aarch64", str(tmp_path / "missing")) == "aarch64"
