"""Domain jobs: what each running job (a migration, a save, a dump, a backup) does now, from
virDomainGetJobStats of the domains that have one (source/jobs.py), and ended jobs by outcome.

Job statistics exist on the job's source only: an incoming migration's destination has none to give
(libvirt: "available only on the source host"), so a migration shows on the host it leaves.
"""

from __future__ import annotations

from typing import Iterable, Optional

from prometheus_client.metrics_core import Metric

from ..sample import JobSnapshot
from .base import Background, Option, ScrapeContext, register
from .families import counter, gauge, info

MS_PER_S = 1000.0

# (job stats key, metric name, help, scale)
JOB_GAUGES = (
    ("time_elapsed", "libvirt_domain_job_elapsed_seconds", "Time since the job started, seconds (time_elapsed).",
     MS_PER_S),
    ("data_total", "libvirt_domain_job_data_total_bytes",
     "Bytes the job has to move in all, as known now (data_total: memory and disks).", 1),
    ("data_processed", "libvirt_domain_job_data_processed_bytes", "Bytes moved so far (data_processed).", 1),
    ("data_remaining", "libvirt_domain_job_data_remaining_bytes", "Bytes left to move (data_remaining).", 1),
    ("memory_bps", "libvirt_domain_job_memory_transfer_rate_bytes_per_second",
     "Rate memory is transferred at, bytes per second (memory_bps).", 1),
    ("memory_iteration", "libvirt_domain_job_memory_iteration",
     "The migration's pass over guest memory: 1 for the first copy, one more per pass over the pages "
     "dirtied meanwhile (memory_iteration).", 1),
    ("memory_postcopy_requests", "libvirt_domain_job_memory_postcopy_requests",
     "Pages the destination requested from the source in post-copy (memory_postcopy_requests).", 1),
    ("downtime", "libvirt_domain_job_expected_downtime_seconds",
     "The downtime the switch-over is expected to cost, seconds (downtime, of a running job).", MS_PER_S),
)


def dirty_rate_bytes_per_s(stats: dict) -> Optional[float]:
    """memory_dirty_rate is in pages per second: times memory_page_size (4 KiB when absent)."""
    pages = stats.get("memory_dirty_rate")
    if pages is None:
        return None
    return float(pages) * float(stats.get("memory_page_size", 4096))


@register("job", default_enabled=True, background=Background.JOB_STATS,
          help="running domain jobs (migrations, saves, dumps, backups): progress, transfer and dirty "
               "rates, iteration; jobs ended by operation and outcome. Reads the job statistics of "
               "domains that have a job only (known from events and state reasons)",
          options=(Option("interval", float, 1.0,
                          "how often the statistics of running jobs are read, seconds"),))
def collect(ctx: ScrapeContext) -> Iterable[Metric]:
    snapshot = ctx.jobs if ctx.jobs is not None else JobSnapshot({}, {})
    job_info = info("libvirt_domain_job_info", "An active domain job (value 1): its type and operation.",
                    ["domain", "type", "operation"])
    gauges = [(key, gauge(name, doc), scale) for key, name, doc, scale in JOB_GAUGES]
    dirty = gauge("libvirt_domain_job_memory_dirty_rate_bytes_per_second",
                  "Rate the guest dirties memory at, bytes per second (memory_dirty_rate x memory_page_size).")
    for reading in sorted(snapshot.active.values(), key=lambda r: r.name):
        if not ctx.keeps_domain(reading.name):
            continue
        stats = dict(reading.stats)
        job_info.add_metric((reading.name, reading.type, reading.operation), {})
        for key, family, scale in gauges:
            value = stats.get(key)
            if value is not None:
                family.add_metric((reading.name,), float(value) / scale)
        rate = dirty_rate_bytes_per_s(stats)
        if rate is not None:
            dirty.add_metric((reading.name,), rate)
    completed = counter("libvirt_domain_jobs_completed_total",
                        "Domain jobs ended on this host since the exporter started, by operation and outcome "
                        "(completed, failed, cancelled).", ["operation", "outcome"])
    for (operation, outcome), count in sorted(snapshot.completed.items()):
        completed.add_metric((operation, outcome), count)
    yield job_info
    for _key, family, _scale in gauges:
        yield family
    yield dirty
    yield completed
