"""calc.numa: vCPU → cell and memory per cell."""

from __future__ import annotations

from virt_exporter.calc.numa import cpu_to_cell, memory_per_cell, vcpu_cells, vcpus_per_cell


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
