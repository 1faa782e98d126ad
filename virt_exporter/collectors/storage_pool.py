"""Storage pools: sizes and state (one pool list call and one info call per pool, per sample).

Sizes are libvirt's as of the pool's last refresh (``virsh pool-refresh``, pool start, volume
changes made through libvirt), the same figures ``virsh pool-info`` prints.
"""

from __future__ import annotations

from typing import Iterable

from prometheus_client.metrics_core import Metric

from ..sample import STORAGE_POOLS
from .base import ScrapeContext, register
from .families import gauge, info

# virStoragePoolState, as virsh pool-info names them.
POOL_STATES = {0: "inactive", 1: "building", 2: "running", 3: "degraded", 4: "inaccessible"}


@register("storage_pool", reads=(STORAGE_POOLS,),
          help="storage pool capacity, allocation, available bytes and state")
def collect(ctx: ScrapeContext) -> Iterable[Metric]:
    cur = ctx.current
    if cur.storage_pools is None:
        # collector_success 0 for this scrape; the reader logged why.
        raise RuntimeError("storage pools not read: " + (cur.listings_error or "no listing"))
    labels = ["pool"]
    pool_info = info("libvirt_storage_pool_info", "Storage pool type and state (value 1).", ["pool", "type", "state"])
    capacity = gauge("libvirt_storage_pool_capacity_bytes", "Size of the pool, bytes (virStoragePoolGetInfo).",
                     labels)
    allocation = gauge("libvirt_storage_pool_allocation_bytes",
                       "Bytes of the pool allocated to volumes (virStoragePoolGetInfo).", labels)
    available = gauge("libvirt_storage_pool_available_bytes",
                      "Bytes of the pool free for new volumes (virStoragePoolGetInfo).", labels)
    for pool in cur.storage_pools or ():
        key = (pool.name,)
        pool_info.add_metric([pool.name, pool.type, POOL_STATES.get(pool.state, str(pool.state))], {})
        # An inactive pool reports 0 for every size: no sizes then, rather than a false "empty".
        if pool.state == 0:
            continue
        capacity.add_metric(key, pool.capacity_bytes)
        allocation.add_metric(key, pool.allocation_bytes)
        available.add_metric(key, pool.available_bytes)
    yield from (pool_info, capacity, allocation, available)
