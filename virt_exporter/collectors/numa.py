"""NUMA: host cells (vdsm's memory_by_cell), per-VM placement (numa_maps, vCPU threads) and the
domain's configured <numatune>.

Host cells come from the Sample (the sampler's getMemoryStats(cell) and capabilities topology). Per-VM
placement comes from the background NUMA reader's last snapshot (``ctx.numa``; the sampler hands
the reader the running domains), so a scrape never waits for numa_maps. The option ``interval`` is
the reader's refresh period; the CLI builds the reader with it.
"""

from __future__ import annotations

from typing import Iterable

from prometheus_client.metrics_core import Metric

from ..calc.numa import host_cell_cpus, live_placement, memory_per_cell, vcpus_per_cell
from .base import Background, Option, ScrapeContext, register
from .families import KIB, gauge, info


@register("numa", default_enabled=True, stats_groups=("state",), qemu_pids=True,
          background=Background.NUMA_PLACEMENT,
          help="NUMA cells of the host and per-VM memory / vCPU placement",
          options=(Option("interval", float, 30.0,
                          "Seconds between reads of each VM's /proc/<pid>/numa_maps (read in the "
                          "background, cached between reads)."),))
def collect(ctx: ScrapeContext) -> Iterable[Metric]:
    current = ctx.current
    active = {uuid: dom for uuid, dom in current.domains.items() if dom.active}
    snap = ctx.numa

    cell_cpus = host_cell_cpus(current.host, snap)
    cell_memory = current.cell_memory
    cells = sorted(set(cell_cpus) | set(cell_memory))

    # -- host cells ------------------------------------------------------------------------------------
    total = gauge("libvirt_host_numa_cell_memory_bytes",
                              "Memory of a host NUMA cell in bytes (getMemoryStats(cell) total). Cells "
                              "need not add up to the host total.", labels=["cell"])
    free = gauge("libvirt_host_numa_cell_memory_free_bytes",
                             "Free memory of a host NUMA cell in bytes (getMemoryStats(cell) free).",
                             labels=["cell"])
    for cell in sorted(cell_memory):
        total.add_metric([str(cell)], cell_memory[cell].total_kib * KIB)
        free.add_metric([str(cell)], cell_memory[cell].free_kib * KIB)
    yield total
    yield free
    ncpus = gauge("libvirt_host_numa_cell_cpus",
                              "Logical CPUs of a host NUMA cell (capabilities topology).", labels=["cell"])
    for cell in sorted(cell_cpus):
        ncpus.add_metric([str(cell)], len(cell_cpus[cell]))
    yield ncpus

    # -- configured tuning -------------------------------------------------------------------------------
    tune = info("libvirt_domain_numatune",
                            "The domain's configured <numatune><memory mode nodeset> (domain XML).",
                            labels=["domain", "mode", "nodeset"])
    for uuid, dom in sorted(current.domains.items(), key=lambda kv: kv[1].name):
        meta = ctx.domain_info.get(uuid)
        numatune = meta.numatune if meta is not None else None
        if numatune:
            mode, nodeset = numatune
            tune.add_metric([dom.name, mode or "", nodeset or ""], {})
    yield tune

    # -- per-VM placement ----------------------------------------------------------------------------------
    memory = gauge("libvirt_domain_numa_memory_bytes",
                               "Resident memory of the domain's QEMU process on a host cell in bytes "
                               "(/proc/<pid>/numa_maps pages x page size, read every "
                               "--collector.numa.interval).", labels=["domain", "cell"])
    vcpus = gauge("libvirt_domain_numa_vcpus",
                              "vCPUs whose thread last ran on a CPU of the host cell (/proc/<pid>/task).",
                              labels=["domain", "cell"])
    readable = gauge("libvirt_exporter_numa_readable",
                                 "1 when every running domain's /proc/<pid> placement could be read; 0 "
                                 "with the reason (no_reader, no_proc, permission_denied, pid_mismatch, "
                                 "pid_not_found, pid_unknown, read_error) when a domain's read failed "
                                 "twice in a row (once is a domain starting or stopping).",
                                 labels=["reason"])
    cost = gauge("libvirt_exporter_numa_refresh_duration_seconds",
                             "Time reading every running domain's numa_maps and vCPU threads once took, "
                             "from each one's last read.", labels=())
    if snap is None:
        readable.add_metric(["no_reader"], 0)
    else:
        readable.add_metric([snap.reason], 1 if snap.readable else 0)
        cost.add_metric([], snap.refresh_duration_s)
        for uuid, dom in sorted(active.items(), key=lambda kv: kv[1].name):
            placement = live_placement(snap, current, uuid)
            if placement is None:
                continue
            if placement.memory_bytes_by_node is not None:
                for cell, size in sorted(memory_per_cell(placement.memory_bytes_by_node, cells).items()):
                    memory.add_metric([dom.name, str(cell)], size)
            if placement.vcpu_cpus is not None and cell_cpus:
                for cell, count in sorted(vcpus_per_cell(placement.vcpu_cpus, cell_cpus).items()):
                    vcpus.add_metric([dom.name, str(cell)], count)
    yield memory
    yield vcpus
    yield readable
    yield cost
