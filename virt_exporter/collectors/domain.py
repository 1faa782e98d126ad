"""Domain identity and state: info (with the title), OpenStack Nova info, labels from any metadata,
state and state reason, autostart and persistent.

Inactive (defined, shut off) domains export these and nothing else.
"""

from __future__ import annotations

import argparse
from typing import Iterable, Tuple

from prometheus_client.metrics_core import Metric

from ..metadata_labels import LabelSpec, parse_label_spec
from ..sample import DOMAIN_FLAGS
from .base import Option, ScrapeContext, register
from .families import gauge, info

STATE_HELP = ("virDomainState code: 0 nostate, 1 running, 2 blocked, 3 paused, 4 shutting down, "
              "5 shut off, 6 crashed, 7 pmsuspended")
REASON_HELP = ("reason code of the current state (virDomain<State>Reason); e.g. paused: 1 user, "
               "2 migration, 3 save, 4 dump, 5 I/O error, 6 watchdog …, 12 post-copy failed; "
               "running: 1 booted, 2 migrated, 3 restored …")


def label_spec(text: str) -> LabelSpec:
    """argparse type of --collector.domain.metadata-label: the reason, not argparse's generic line."""
    try:
        return parse_label_spec(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


METADATA_LABEL = Option(
    "metadata-label", label_spec, (),
    "LABEL=NAMESPACE_URI:XPATH: a label of libvirt_domain_metadata_info, the XPath evaluated in the "
    "domain's <metadata> element of that namespace with the namespace left off (e.g. "
    "team=http://example.org/app/1:/app/@team)", repeatable=True)


@register("domain", stats_groups=("state",), options=(METADATA_LABEL,), reads=(DOMAIN_FLAGS,),
          help="domain info and title, OpenStack Nova info, metadata labels, state and reason, autostart, "
               "persistent")
def collect(ctx: ScrapeContext) -> Iterable[Metric]:
    specs = [spec for spec in _as_tuple(ctx.options.get("metadata-label")) if isinstance(spec, LabelSpec)]
    dom_info = info("libvirt_domain_info", "Domain identity from its XML (value 1); title is <title>.",
                    ["domain", "uuid", "os_type", "arch", "machine", "type", "title"])
    nova = info("libvirt_domain_openstack_info", "OpenStack Nova metadata of the domain (value 1).",
                ["domain", "instance_name", "instance_uuid", "project_name", "project_uuid",
                 "user_name", "user_uuid", "flavor"])
    metadata = info("libvirt_domain_metadata_info",
                    "Labels from the domain's <metadata>, one per --collector.domain.metadata-label "
                    "(value 1; no series without that flag).",
                    ["domain"] + [s.label for s in specs])
    state = gauge("libvirt_domain_state", STATE_HELP)
    reason = gauge("libvirt_domain_state_reason", REASON_HELP)
    autostart = gauge("libvirt_domain_autostart", "1 when the domain starts with the host (virsh autostart), else 0.")
    persistent = gauge("libvirt_domain_persistent", "1 for a defined (persistent) domain, 0 for a transient one.")
    cur = ctx.current
    for uuid, dom in cur.domains.items():
        name = dom.name
        key = (name,)
        state.add_metric(key, dom.state)
        reason.add_metric(key, dom.reason)
        # Listings are None when they could not be read (logged by the reader): no series then.
        if cur.autostart is not None:
            autostart.add_metric(key, 1 if uuid in cur.autostart else 0)
        if cur.persistent is not None:
            persistent.add_metric(key, 1 if uuid in cur.persistent else 0)
        meta = ctx.domain_info.get(uuid)
        if meta is None:
            continue
        # <numatune> is on libvirt_domain_numatune_info (numa collector).
        dom_info.add_metric([name, uuid, meta.os_type, meta.arch, meta.machine, meta.domain_type, meta.title], {})
        if meta.nova is not None:
            n = meta.nova
            nova.add_metric([name, n.instance_name, uuid, n.project_name, n.project_uuid,
                             n.user_name, n.user_uuid, n.flavor], {})
        # Values were computed with the cache's label specs; a count mismatch would shift labels.
        if specs and len(meta.metadata_labels) == len(specs):
            metadata.add_metric([name, *meta.metadata_labels], {})
    yield from (dom_info, nova, metadata, state, reason, autostart, persistent)


def _as_tuple(value: object) -> Tuple[object, ...]:
    return value if isinstance(value, tuple) else ()
