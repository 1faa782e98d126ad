"""calc.numa: numa_maps arithmetic (base and huge pages), task stat field 39, cpulists, vCPU → cell."""

from __future__ import annotations

from pathlib import Path

import pytest

from virt_exporter.calc.numa import (cpu_to_cell, memory_per_cell, numa_maps_bytes_by_node, parse_cpulist,
                                     parse_task_stat_cpu, vcpu_cells, vcpu_index, vcpus_per_cell)

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures/numa/twonode/proc/4242/numa_maps"
KIB, MIB, GIB = 1024, 1024 ** 2, 1024 ** 3


def test_numa_maps_three_lines():
    text = ("7f00 default anon=3 dirty=3 N0=2 N1=1 kernelpagesize_kB=4\n"
            "7f01 bind:1 file=/dev/hugepages/x huge dirty=2 N1=2 kernelpagesize_kB=2048\n"
            "7f02 default\n")
    assert numa_maps_bytes_by_node(text) == {0: 2 * 4 * KIB, 1: 1 * 4 * KIB + 2 * 2 * MIB}


def test_numa_maps_without_kernelpagesize_uses_default_page():
    assert numa_maps_bytes_by_node("7f00 default anon=5 N3=5\n", default_page_kib=16) == {3: 5 * 16 * KIB}


def test_numa_maps_ignores_counts_that_are_not_node_pages():
    # anon= / mapped= / dirty= / mapmax= / active= are other counts of the same pages
    text = "7f00 default file=/lib/x.so anon=9 mapped=40 mapmax=7 active=3 dirty=9 N2=40 kernelpagesize_kB=4\n"
    assert numa_maps_bytes_by_node(text) == {2: 40 * 4 * KIB}


def test_numa_maps_file_name_that_looks_like_a_node_token_is_not_counted():
    # the kernel prints file= verbatim; only whole N<k>=<pages> tokens are pages
    text = "7f00 default file=/tmp/N0=99 mapped=1 N1=1 kernelpagesize_kB=4\n"
    assert numa_maps_bytes_by_node(text) == {1: 4 * KIB}


def test_recorded_two_node_qemu_numa_maps():
    """The fixture: a QEMU with 4 KiB mappings on both nodes, hugetlbfs 2 MiB pages bound to each
    node, one 1 GiB page on node 1, an interleaved anonymous region, and unpopulated mappings."""
    by_node = numa_maps_bytes_by_node(FIXTURE.read_text())
    small_n0 = 1024 + 25 + 3072 + 131072 + 33
    small_n1 = 15 + 2048 + 131072 + 1
    assert by_node == {
        0: small_n0 * 4 * KIB + 256 * 2 * MIB,
        1: small_n1 * 4 * KIB + 200 * 2 * MIB + 1 * GIB,
    }
    assert by_node[0] == 1_090_756_608
    assert by_node[1] == 2_038_497_280


def test_task_stat_field_39_with_spaces_and_parens_in_comm():
    line = "4252 (CPU 1/KVM) S " + " ".join(["0"] * 35) + " 9 0 0 0 342 0 0 0 0 0 0 0 0 0\n"
    assert parse_task_stat_cpu(line) == 9
    tricky = "4260 (worker (x) y) S " + " ".join(["1"] * 35) + " 15 0 0 0 0 0 0 0 0 0 0 0 0 0\n"
    assert parse_task_stat_cpu(tricky) == 15


def test_task_stat_too_short_raises():
    with pytest.raises(IndexError):
        parse_task_stat_cpu("1 (x) S 1 2 3\n")


@pytest.mark.parametrize("comm,index", [("CPU 0/KVM\n", 0), ("CPU 17/KVM", 17), ("CPU 3/TCG", 3),
                                        ("qemu-system-x86", None), ("IO iothread1", None),
                                        ("CPU 1", None)])
def test_vcpu_index(comm, index):
    assert vcpu_index(comm) == index


def test_parse_cpulist():
    assert parse_cpulist("0-3,8,10-11\n") == [0, 1, 2, 3, 8, 10, 11]
    assert parse_cpulist("5") == [5]
    assert parse_cpulist("\n") == []


def test_vcpu_placement_three_vcpus_two_cells():
    cells = {0: [0, 1, 2, 3], 1: [4, 5, 6, 7]}
    vcpu_cpus = {0: 1, 1: 6, 2: 4}
    assert cpu_to_cell(cells)[6] == 1
    assert vcpu_cells(vcpu_cpus, cells) == {0: 0, 1: 1, 2: 1}
    assert vcpus_per_cell(vcpu_cpus, cells) == {0: 1, 1: 2}


def test_vcpus_per_cell_reports_empty_cells_and_skips_unknown_cpus():
    cells = {0: [0, 1], 1: [2, 3], 2: [4, 5]}
    # CPU 9 is in no cell (offline or a topology that changed): not counted anywhere
    assert vcpus_per_cell({0: 0, 1: 1, 2: 9}, cells) == {0: 2, 1: 0, 2: 0}


def test_memory_per_cell_zero_fills_and_keeps_unknown_nodes():
    assert memory_per_cell({1: 4096}, [0, 1]) == {0: 0, 1: 4096}
    # a node the topology did not list is kept, never dropped
    assert memory_per_cell({0: 1, 3: 2}, [0, 1]) == {0: 1, 1: 0, 3: 2}
