"""Domain identity and state: info, OpenStack Nova info, state and state reason.

Inactive (defined, shut off) domains export these and nothing else.
"""

from __future__ import annotations

from typing import Iterable

from prometheus_client.metrics_core import Metric

from .base import ScrapeContext, register
from .families import gauge, info

STATE_HELP = ("virDomainState code: 0 nostate, 1 running, 2 blocked, 3 paused, 4 shutting down, "
              "5 shut off, 6 crashed, 7 pmsuspended")
REASON_HELP = ("reason code of the current state (virDomain<State>Reason); e.g. paused: 1 user, "
               "2 migration, 3 save, 4 dump, 5 I/O error, 6 watchdog …, 12 post-copy failed; "
               "running: 1 booted, 2 migrated, 3 restored …")


@register("domain", stats_groups=("state",), help="domain info, OpenStack Nova info, state and reason")
def collect(ctx: ScrapeContext) -> Iterable[Metric]:
    dom_info = info("libvirt_domain_info", "Domain identity from its XML (value 1).",
                    ["domain", "uuid", "os_type", "arch", "machine", "type"])
    nova = info("libvirt_domain_openstack_info", "OpenStack Nova metadata of the domain (value 1).",
                ["domain", "instance_name", "instance_uuid", "project_name", "project_uuid",
                 "user_name", "user_uuid", "flavor"])
    state = gauge("libvirt_domain_state", STATE_HELP)
    reason = gauge("libvirt_domain_state_reason", REASON_HELP)
    for uuid, dom in ctx.current.domains.items():
        name = dom.name
        key = (name,)
        state.add_metric(key, dom.state)
        reason.add_metric(key, dom.reason)
        meta = ctx.domain_info.get(uuid)
        if meta is None:
            continue
        # <numatune> is on libvirt_domain_numatune_info (numa collector).
        dom_info.add_metric([name, uuid, meta.os_type, meta.arch, meta.machine, meta.domain_type], {})
        if meta.nova is not None:
            n = meta.nova
            nova.add_metric([name, n.instance_name, uuid, n.project_name, n.project_uuid,
                             n.user_name, n.user_uuid, n.flavor], {})
    yield from (dom_info, nova, state, reason)
