"""Host NUMA topology from the capabilities XML (read once per connection, not per scrape)."""

from __future__ import annotations

from typing import Dict, List

from lxml import etree

_PARSER = etree.XMLParser(resolve_entities=False, no_network=True)


def cells_from_capabilities(capabilities_xml: str) -> Dict[int, List[int]]:
    """{cell id: [logical CPU ids]} from ``<host><topology><cells>``; {} when libvirt reports none."""
    root = etree.fromstring(capabilities_xml.encode("utf-8"), _PARSER)
    cells: Dict[int, List[int]] = {}
    for cell in root.iterfind("host/topology/cells/cell"):
        cells[int(cell.get("id"))] = sorted(int(cpu.get("id")) for cpu in cell.iterfind("cpus/cpu"))
    return cells
