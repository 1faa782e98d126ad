"""source.topology: the host's NUMA cells from the capabilities XML, checked on a two-cell document
and against `virsh capabilities` of this host."""

import pytest

import testbed as tb
from virt_exporter.source.topology import cells_from_capabilities

TWO_CELLS = """<capabilities><host><uuid>x</uuid><topology><cells num='2'>
  <cell id='0'><memory unit='KiB'>4000</memory><cpus num='3'>
    <cpu id='2' socket_id='0' core_id='2' siblings='2'/><cpu id='0' socket_id='0' core_id='0' siblings='0'/>
    <cpu id='1' socket_id='0' core_id='1' siblings='1'/></cpus></cell>
  <cell id='1'><memory unit='KiB'>4000</memory><cpus num='1'><cpu id='8'/></cpus></cell>
</cells></topology></host><guest/></capabilities>"""


def test_two_cells_with_sorted_cpus():
    assert cells_from_capabilities(TWO_CELLS) == {0: [0, 1, 2], 1: [8]}


def test_no_topology_is_no_cells():
    assert cells_from_capabilities("<capabilities><host><cpu/></host></capabilities>") == {}


def test_entities_are_not_expanded():
    doc = ("<!DOCTYPE c [<!ENTITY x 'y'>]><capabilities><host><topology><cells num='1'>"
           "<cell id='0'><cpus num='1'><cpu id='0'/></cpus></cell></cells></topology></host>&x;</capabilities>")
    assert cells_from_capabilities(doc) == {0: [0]}


@pytest.mark.libvirt
def test_this_hosts_cells_are_what_virsh_capabilities_lists(libvirtd):
    xml = tb.virsh("capabilities")
    cells = cells_from_capabilities(xml)
    assert cells, "virsh capabilities lists no NUMA cell"
    # every CPU id in the document's <cpus> lists, once, in the cell it is listed in
    assert sum(len(cpus) for cpus in cells.values()) == xml.count("<cpu id=")
