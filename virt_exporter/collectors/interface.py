"""Network interface counters (interface group), labelled by the host-side device name.

An interface without one (user-mode networking) has no series: libvirt reports no counters for it.
"""

from __future__ import annotations

from typing import Iterable

from prometheus_client.metrics_core import Metric

from .base import ScrapeContext, register
from .families import counter, info

NET_COUNTERS = (
    ("rx.bytes", "libvirt_domain_interface_receive_bytes_total", "Bytes received by the guest (net.N.rx.bytes)."),
    ("rx.pkts", "libvirt_domain_interface_receive_packets_total", "Packets received (net.N.rx.pkts)."),
    ("rx.errs", "libvirt_domain_interface_receive_errors_total", "Receive errors (net.N.rx.errs)."),
    ("rx.drop", "libvirt_domain_interface_receive_drops_total", "Received packets dropped (net.N.rx.drop)."),
    ("tx.bytes", "libvirt_domain_interface_transmit_bytes_total", "Bytes sent by the guest (net.N.tx.bytes)."),
    ("tx.pkts", "libvirt_domain_interface_transmit_packets_total", "Packets sent (net.N.tx.pkts)."),
    ("tx.errs", "libvirt_domain_interface_transmit_errors_total", "Transmit errors (net.N.tx.errs)."),
    ("tx.drop", "libvirt_domain_interface_transmit_drops_total", "Sent packets dropped (net.N.tx.drop)."),
)


@register("interface", stats_groups=("interface",), help="network interface byte, packet, error and drop counters")
def collect(ctx: ScrapeContext) -> Iterable[Metric]:
    labels_names = ["domain", "interface"]
    iface_info = info("libvirt_domain_interface_info",
                      "Interface identity (value 1): MAC, type, what it is attached to, model.",
                      ["domain", "interface", "mac", "type", "source", "model"])
    families = [(key, counter(name, doc, labels_names)) for key, name, doc in NET_COUNTERS]
    for uuid, dom in ctx.current.domains.items():
        if "net.count" not in dom.stats:
            continue
        meta = ctx.domain_info.get(uuid)
        known = {i.target: i for i in meta.interfaces} if meta is not None else {}
        for dev in dom.devices("net"):
            target = str(dev.get("name", ""))
            if not target:
                # No host-side device (user-mode networking): libvirt has no counters for it, and
                # two of them would be one label set twice.
                continue
            labels = (dom.name, target)
            iface = known.get(target)
            if iface is not None:
                iface_info.add_metric([dom.name, target, iface.mac, iface.type, iface.source, iface.model], {})
            for key, family in families:
                value = dev.get(key)
                if value is not None:
                    family.add_metric(labels, value)
    yield iface_info
    for _key, family in families:
        yield family
