"""Domain XML, parsed once per domain and again only when an event says it changed.

Never poll the domain XML: fetching it is heavyweight for the hypervisor, and only live resource info
and the domain listings are cheap enough to poll (Daniel Berrangé, libvirt maintainer, on ovirt-devel,
July 2008). The cache fetches XMLDesc for a domain it has not seen, and again only after a lifecycle,
device-added/removed or metadata-change event for it.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import libvirt
from lxml import etree

from ..metadata_labels import LabelSpec, bounded, label_values
from ..namespaces import PERFMON_METADATA_NS
from ..sample import BackingLayer, DiskInfo, DomainInfo, InterfaceInfo, NovaInfo

log = logging.getLogger(__name__)

NOVA_NS_PREFIX = "http://openstack.org/xmlns/libvirt/nova/"

# No entities, no network, no huge trees: domain XML comes from libvirtd, but metadata inside it
# is whatever a user put there.
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False, remove_comments=True)


def _attr(el: Optional[etree._Element], name: str, default: str = "") -> str:
    if el is None:
        return default
    return el.get(name, default)


def _text(el: Optional[etree._Element], default: str = "") -> str:
    if el is None or el.text is None:
        return default
    return el.text.strip()


def _disk_path(disk: etree._Element, source_type: Optional[str]) -> str:
    src = disk.find("source")
    if src is None:
        return ""
    if source_type == "network":
        proto, name = src.get("protocol", ""), src.get("name", "")
        return "%s:%s" % (proto, name) if proto else name
    if source_type == "volume":
        return "%s/%s" % (src.get("pool", ""), src.get("volume", ""))
    return src.get("file") or src.get("dev") or src.get("dir") or src.get("name") or ""


def _backing_chain(disk: etree._Element) -> Tuple[BackingLayer, ...]:
    layers: List[BackingLayer] = []
    store = disk.find("backingStore")
    while store is not None and store.get("type"):  # an empty <backingStore/> ends the chain
        index = store.get("index")
        layers.append(BackingLayer(
            index=int(index) if index and index.isdigit() else None,
            source_type=store.get("type"),
            driver_type=_attr(store.find("format"), "type") or None,
            path=_disk_path(store, store.get("type")),
        ))
        store = store.find("backingStore")
    return tuple(layers)


def _iotune(disk: etree._Element) -> Tuple[Tuple[str, int], ...]:
    iotune = disk.find("iotune")
    if iotune is None:
        return ()
    return tuple((el.tag, int(el.text)) for el in iotune
                 if isinstance(el.tag, str) and el.text and el.text.strip().isdigit())


def _cputune(root: etree._Element) -> Tuple[Tuple[Tuple[int, str], ...], str]:
    pins = []
    for pin in root.iterfind("cputune/vcpupin"):
        vcpu = pin.get("vcpu", "")
        if vcpu.isdigit() and pin.get("cpuset"):
            pins.append((int(vcpu), pin.get("cpuset", "")))
    emulator = root.find("cputune/emulatorpin")
    return tuple(sorted(pins)), _attr(emulator, "cpuset")


def parse_domain_xml(xml: str, label_specs: Sequence[LabelSpec] = ()) -> DomainInfo:
    """Parse what the exporter needs out of a domain's XML (``XMLDesc(0)``), with the values of
    the metadata labels ``label_specs`` asks for."""
    root = etree.fromstring(xml.encode("utf-8"), _PARSER)
    os_type_el = root.find("os/type")
    disks: List[DiskInfo] = []
    for disk in root.iterfind("devices/disk"):
        source_type = disk.get("type")
        driver = disk.find("driver")
        disks.append(DiskInfo(
            target=_attr(disk.find("target"), "dev"),
            device=disk.get("device", "disk"),
            source_type=source_type,
            path=_disk_path(disk, source_type),
            bus=_attr(disk.find("target"), "bus"),
            driver_type=driver.get("type") if driver is not None else None,
            alias=_attr(disk.find("alias"), "name"),
            backing=_backing_chain(disk),
            iotune=_iotune(disk),
        ))
    interfaces: List[InterfaceInfo] = []
    for iface in root.iterfind("devices/interface"):
        src = iface.find("source")
        source = ""
        if src is not None:
            source = src.get("bridge") or src.get("network") or src.get("dev") or ""
        interfaces.append(InterfaceInfo(
            target=_attr(iface.find("target"), "dev"),
            mac=_attr(iface.find("mac"), "address"),
            type=iface.get("type", ""),
            source=source,
            model=_attr(iface.find("model"), "type"),
        ))
    memory_el = root.find("numatune/memory")
    numatune = None
    if memory_el is not None:
        numatune = (memory_el.get("mode", "strict"), memory_el.get("nodeset", ""))
    vcpu_el = root.find("vcpu")
    vcpus = int(vcpu_el.get("current") or _text(vcpu_el, "0") or 0) if vcpu_el is not None else 0
    memory_kib = int(_text(root.find("currentMemory"), "") or _text(root.find("memory"), "0") or 0)
    nova = None
    perfmon_xml = None
    metadata = root.find("metadata")
    if metadata is not None:
        for child in metadata:
            if not isinstance(child.tag, str):
                continue
            ns = etree.QName(child).namespace or ""
            if ns.startswith(NOVA_NS_PREFIX):
                nova = _parse_nova(child, ns)
            elif ns == PERFMON_METADATA_NS:
                perfmon_xml = etree.tostring(child, encoding="unicode")
    vcpu_pins, emulator_cpuset = _cputune(root)
    return DomainInfo(
        uuid=_text(root.find("uuid")),
        name=_text(root.find("name")),
        os_type=_text(os_type_el),
        arch=_attr(os_type_el, "arch"),
        machine=_attr(os_type_el, "machine"),
        domain_type=root.get("type", ""),
        vcpus=vcpus,
        memory_kib=memory_kib,
        disks=tuple(disks),
        interfaces=tuple(interfaces),
        nova=nova,
        numatune=numatune,
        perfmon_xml=perfmon_xml,
        title=bounded(_text(root.find("title"))),
        vcpu_cpuset=_attr(vcpu_el, "cpuset"),
        vcpu_pins=vcpu_pins,
        emulator_cpuset=emulator_cpuset,
        metadata_labels=label_values(metadata, label_specs) if label_specs else (),
    )


def _parse_nova(instance: etree._Element, ns: str) -> NovaInfo:
    def q(path: str) -> str:
        return "/".join("{%s}%s" % (ns, p) for p in path.split("/"))

    owner_user = instance.find(q("owner/user"))
    owner_project = instance.find(q("owner/project"))
    return NovaInfo(
        instance_name=_text(instance.find(q("name"))),
        project_name=_text(owner_project),
        project_uuid=_attr(owner_project, "uuid"),
        user_name=_text(owner_user),
        user_uuid=_attr(owner_user, "uuid"),
        flavor=_attr(instance.find(q("flavor")), "name"),
    )


# Events after which a domain's XML may have changed.
INVALIDATING_EVENTS = (
    libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE,
    libvirt.VIR_DOMAIN_EVENT_ID_DEVICE_ADDED,
    libvirt.VIR_DOMAIN_EVENT_ID_DEVICE_REMOVED,
    libvirt.VIR_DOMAIN_EVENT_ID_METADATA_CHANGE,
    # vcpupin, emulatorpin, blkdeviotune on a running domain change its live XML
    libvirt.VIR_DOMAIN_EVENT_ID_TUNABLE,
)


def xml_or_none(dom: libvirt.virDomain) -> Optional[str]:
    """The domain's XML (libvirtd answers from its own copy of the definition), or None when the
    domain is gone; other errors are raised."""
    try:
        return dom.XMLDesc(0)
    except libvirt.libvirtError as e:
        if e.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
            raise
        return None


class DomainXMLCache:
    """UUID → DomainInfo, fetched on first sight and re-fetched only after an invalidating event.

    The sample reader asks for ``missing(uuids)``, reads those domains' XML through the connection's
    call budget and hands it to ``store(uuid, xml)``; events only mark entries stale, so no libvirt
    call runs on the event-loop thread.
    """

    def __init__(self, label_specs: Sequence[LabelSpec] = ()) -> None:
        self.label_specs = tuple(label_specs)
        self._lock = threading.Lock()
        self._infos: Dict[str, DomainInfo] = {}
        self._stale: set = set()
        self._listeners: List[Callable[[str, int, int], None]] = []

    def subscribe(self, on_lifecycle: Callable[[str, int, int], None]) -> None:
        """Call ``on_lifecycle(uuid, event, detail)`` for every lifecycle event (after invalidation)."""
        self._listeners.append(on_lifecycle)

    def register_events(self, register: Callable[[int, Callable[..., None]], None]) -> None:
        """Hook the cache to a Connection.on_event."""
        register(libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._on_lifecycle)
        for event_id in INVALIDATING_EVENTS[1:]:
            register(event_id, self._on_change)

    def _on_lifecycle(self, conn: libvirt.virConnect, dom: libvirt.virDomain, event: int, detail: int) -> None:
        uuid = dom.UUIDString()
        with self._lock:
            if event == libvirt.VIR_DOMAIN_EVENT_UNDEFINED:
                self._infos.pop(uuid, None)
                self._stale.discard(uuid)
            else:
                self._stale.add(uuid)
        for listener in self._listeners:
            listener(uuid, event, detail)

    def _on_change(self, conn: libvirt.virConnect, dom: libvirt.virDomain, *args: object) -> None:
        with self._lock:
            self._stale.add(dom.UUIDString())

    def invalidate_all(self) -> None:
        """After a reconnect we may have missed events: re-read everything once."""
        with self._lock:
            self._stale.update(self._infos)

    def missing(self, uuids: Iterable[str]) -> List[str]:
        """UUIDs among ``uuids`` that need (re)fetching."""
        with self._lock:
            return [u for u in uuids if u not in self._infos or u in self._stale]

    def store(self, uuid: str, xml: str) -> None:
        try:
            info = parse_domain_xml(xml, self.label_specs)
        except (etree.XMLSyntaxError, ValueError) as e:
            log.warning("cannot parse domain XML of %s: %s", uuid, e)
            return
        with self._lock:
            self._infos[uuid] = info
            self._stale.discard(uuid)

    def forget_except(self, uuids: Iterable[str]) -> None:
        """Drop entries of domains that no longer exist (undefined while we were disconnected)."""
        keep = set(uuids)
        with self._lock:
            for uuid in [u for u in self._infos if u not in keep]:
                del self._infos[uuid]
            self._stale &= keep

    def snapshot(self) -> Mapping[str, DomainInfo]:
        with self._lock:
            return dict(self._infos)
