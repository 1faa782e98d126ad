"""The Prometheus rule files, rendered from a ``MixinConfig``.

Expressions are written below with bare series names; ``scoped`` adds the job selector to every
series selector (raw metrics, our own recorded series and ``up``), so no rule ever reads another job's
series. Thresholds are recorded series (``threshold_rule``): the fleet-wide default from the knobs,
unless the operator's override series has a value for the host.
"""

from __future__ import annotations

import re
import textwrap
from typing import Any, Dict, List, Tuple

from .config import OPTIONAL_GROUPS, MixinConfig
from .yamlout import render_rule_file

# The series an operator writes (with a recording rule of their own) to override a threshold for a
# host: instance:virt_exporter_threshold:override{instance="kvm-07", threshold="vcpu_steal_ratio"}.
OVERRIDE_SERIES = "instance:virt_exporter_threshold:override"

_SERIES_RE = re.compile(r"(?<![\w:\"])((?:libvirt_|instance:|domain:)[\w:]*|up)(?![\w:(])(\{)?")


def scoped(expr: str, selector: str) -> str:
    """``expr`` with ``selector`` added to every series selector but the override series."""

    def add(m: "re.Match[str]") -> str:
        name = m.group(1)
        if name == OVERRIDE_SERIES:
            return m.group(0)
        return "%s{%s%s" % (name, selector, "," if m.group(2) else "}")

    return _SERIES_RE.sub(add, expr)


_UNITS = {"ms": "millisecond", "s": "second", "m": "minute", "h": "hour", "d": "day", "w": "week", "y": "year"}


def spoken(duration: str) -> str:
    """A Prometheus duration as prose: 15m → 15 minutes, 1h → an hour (mixed units stay as they are)."""
    m = re.fullmatch(r"(\d+)(ms|[smhdwy])", duration)
    if not m:
        return duration
    n, unit = int(m.group(1)), _UNITS[m.group(2)]
    if n == 1:
        return ("an " if unit == "hour" else "a ") + unit
    return "%d %ss" % (n, unit)


def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


def _expr(text: str) -> str:
    return textwrap.dedent(text).strip("\n") + "\n" if "\n" in text.strip("\n") else text.strip()


class _Rules:
    """Builds one group's rules for a config."""

    def __init__(self, cfg: MixinConfig) -> None:
        self.cfg = cfg
        self.rules: List[Dict[str, Any]] = []

    def w(self, key: str) -> str:
        return self.cfg.windows[key]

    def sw(self, key: str) -> str:
        """A window in prose, for descriptions."""
        return spoken(self.cfg.windows[key])

    def f(self, alert: str) -> str:
        """An alert's `for` in prose, for descriptions."""
        return spoken(self.cfg.for_[alert])

    def record(self, name: str, expr: str, comment: str = "") -> None:
        rule: Dict[str, Any] = {"record": name, "expr": scoped(_expr(expr), self.cfg.job_selector)}
        if comment:
            rule = {"comment": comment, **rule}
        self.rules.append(rule)

    def threshold(self, key: str, comment: str = "") -> None:
        """The recorded threshold: the override series' value for the host where it has one, else the
        default. Both sides carry libvirt_up's labels, so `or` keeps exactly one series per host."""
        self.record(self.cfg.threshold_record(key), """
              0 * libvirt_up
            + on (instance) group_left ()
              max by (instance) (%s{threshold="%s"})
            or
              0 * libvirt_up + %s
            """ % (OVERRIDE_SERIES, key, _number(self.cfg.thresholds[key])), comment)

    def alert(self, name: str, expr: str, severity: str, summary: str, description: str,
              comment: str = "", extra: Tuple[Tuple[str, Any], ...] = ()) -> None:
        rule: Dict[str, Any] = {}
        if comment:
            rule["comment"] = comment
        rule["alert"] = name
        rule["expr"] = scoped(_expr(expr), self.cfg.job_selector)
        rule["for"] = self.cfg.for_[name]
        rule.update(extra)
        if severity:
            rule["labels"] = {"severity": severity}
        rule["annotations"] = {"summary": summary, "description": " ".join(description.split()),
                               "runbook_url": "%s#%s" % (self.cfg.runbook_url, name.lower())}
        self.rules.append(rule)


# --- the groups -------------------------------------------------------------------------------------

def exporter_group(cfg: MixinConfig) -> List[Dict[str, Any]]:
    r = _Rules(cfg)
    r.alert("VirtExporterDown", """
        up == 0
        or
        absent(up)
        """, "critical", "virt_exporter{{ with $labels.instance }} on {{ . }}{{ end }} is down",
            """{{ with $labels.instance }}Prometheus has failed to scrape the exporter on {{ . }}{{ else }}The job
            has no target at all{{ end }} for {{ $for }}: no metrics and none of the other alerts for
            {{ with $labels.instance }}this host{{ else }}any host{{ end }}. Check that the exporter runs
            (systemctl status virt-exporter), listens, and that Prometheus reaches it.""".replace(
                "{{ $for }}", r.f("VirtExporterDown")),
            comment="The exporter itself: its target fails, or the job has no target (every rule would go quiet).")
    r.alert("LibvirtDown", "libvirt_up == 0", "critical",
            "libvirtd on {{ $labels.instance }} does not answer the exporter",
            """virt_exporter on {{ $labels.instance }} has not reached libvirtd for %s (libvirt_up 0): no VM
            metrics, no alerts built on them. Check libvirtd (virsh list; its log), and the exporter's log,
            which names the libvirt error.""" % r.f("LibvirtDown"))
    r.alert("LibvirtDomainUnresponsive", "libvirt_exporter_domain_unresponsive == 1", "warning",
            "QEMU of {{ $labels.domain }} on {{ $labels.instance }} does not answer",
            """The QEMU process of {{ $labels.domain }} has not answered libvirt's monitor for %s (its block
            and vCPU counters are missing; every other VM is sampled normally). Check `virsh domstats {{
            $labels.domain }}` and the QEMU process (stopped, hung on storage); the guest itself may be
            frozen.""" % r.f("LibvirtDomainUnresponsive"))
    r.alert("LibvirtExporterCollectorFailing", """
        libvirt_exporter_collector_success == 0
        unless on (instance, job) (libvirt_up == 0)
        """, "warning", "Collector {{ $labels.collector }} of virt_exporter on {{ $labels.instance }} fails",
            """The {{ $labels.collector }} collector has failed in every scrape for %s while libvirt answers:
            its metrics are missing. The exporter's log has the error with a traceback; report it, or switch
            the collector off (--no-collector.{{ $labels.collector }}) meanwhile."""
            % r.f("LibvirtExporterCollectorFailing"),
            comment="A collector that fails while libvirt answers; while libvirt is down every libvirt-fed\n"
                    "collector reports 0 and LibvirtDown says why.")
    return [{"name": "libvirt-exporter", "rules": r.rules}]


def cpu_group(cfg: MixinConfig) -> List[Dict[str, Any]]:
    r = _Rules(cfg)
    r.record("instance:libvirt_cpu_total_mhz:sum", """
        (
            (
                sum without (domain) (libvirt_domain_cpu_usage_mhz)
              or
                0 * libvirt_host_hypervisor_overhead_mhz
            )
          + libvirt_host_hypervisor_overhead_mhz
        )
        or
          libvirt_host_cpu_usage_mhz
        """, comment="Σ VM MHz + overhead. Without VMs the sum is empty, hence `or 0 * overhead`. While the\n"
                     "exporter withholds the overhead (a domain started, stopped or restarted within the interval,\n"
                     "so its CPU cannot be attributed) the host's busy MHz stands in: it is what the sum equals\n"
                     "whenever the VMs do not exceed it, and it keeps the alert's `for` from resetting on churn.")
    r.threshold("cpu_overload_ratio", "Neat's host_cpu_overload_threshold, a share of the capacity.")
    r.record("instance:libvirt_cpu_overload_threshold:mhz", """
        instance:libvirt_cpu_overload_threshold:ratio
          * on (instance, job) group_left ()
        libvirt_host_cpu_capacity_mhz
        """, comment="The overload threshold in MHz: ratio × capacity (logical CPUs × core MHz).")
    r.alert("LibvirtHostCpuOverload", """
        instance:libvirt_cpu_total_mhz:sum
          > on (instance, job) group_left ()
        instance:libvirt_cpu_overload_threshold:mhz
        """, "warning", "Host CPU overloaded on {{ $labels.instance }}",
            """Σ VM MHz + hypervisor overhead on {{ $labels.instance }} is {{ $value | humanize }} MHz, above
            the overload threshold (instance:libvirt_cpu_overload_threshold:mhz) for %s."""
            % r.f("LibvirtHostCpuOverload"))
    r.record("instance:libvirt_cpu_utilization:ratio", """
        instance:libvirt_cpu_total_mhz:sum
          / on (instance, job) group_left ()
        libvirt_host_cpu_capacity_mhz
        """, comment="Neat's host CPU utilization, (Σ VM MHz + hypervisor MHz) / capacity, and its average over\n"
                     "the utilization window (Neat's last-n-samples average); the neat group decides on it.")
    r.record("instance:libvirt_cpu_utilization:avg",
             "avg_over_time(instance:libvirt_cpu_utilization:ratio[%s])" % r.w("cpu_utilization"))
    r.threshold("cpu_underload_ratio", "Neat's host_cpu_underload_threshold.")
    r.record("instance:libvirt_running_domains:count", "count without (domain) (libvirt_domain_state == 1)")
    r.record("instance:libvirt_domains_without_mhz:count", """
        count without (domain) (
            libvirt_domain_state == 1
          unless on (instance, job, domain)
            libvirt_domain_cpu_usage_mhz
        )
        """, comment="running VMs whose MHz is not known yet (first sample, restarted): Neat decides nothing then")
    return [{"name": "libvirt-cpu", "rules": r.rules}]


def capacity_group(cfg: MixinConfig) -> List[Dict[str, Any]]:
    r = _Rules(cfg)
    r.record("instance:libvirt_vcpu_overcommit:ratio", """
        (sum without (domain) (libvirt_domain_vcpus) or 0 * libvirt_host_cpus)
        / libvirt_host_cpus
        """, comment="Σ vCPUs of the running domains / the host's logical CPUs (shut-off domains export no vCPUs)")
    r.record("instance:libvirt_memory_overcommit:ratio", """
        (sum without (domain) (libvirt_domain_memory_maximum_bytes) or 0 * libvirt_host_memory_bytes)
        / libvirt_host_memory_bytes
        """, comment="Σ maximum memory of the running domains / the host's memory")
    r.record("instance:libvirt_memory_free:ratio", "libvirt_host_memory_free_bytes / libvirt_host_memory_bytes",
             comment="MemFree is for the dashboards; the alert reads MemAvailable (free + reclaimable page\n"
                     "cache), since a host whose page cache fills RAM is healthy.")
    r.record("instance:libvirt_memory_available:ratio",
             "libvirt_host_memory_available_bytes / libvirt_host_memory_bytes")
    r.threshold("host_memory_available_ratio")
    r.alert("LibvirtHostMemoryLow", """
        instance:libvirt_memory_available:ratio
          < on (instance, job) group_left ()
        instance:libvirt_memory_low_threshold:ratio
        """, "warning", "Host {{ $labels.instance }} is running out of memory",
            """Only {{ $value | humanizePercentage }} of {{ $labels.instance }}'s memory has been available
            (MemAvailable: free plus reclaimable cache) for %s: next the kernel swaps, or kills a QEMU. Move a
            VM away (the host dashboard's memory overcommit panel shows how far the host is committed),
            shrink balloons, or stop what else runs on the host.""" % r.f("LibvirtHostMemoryLow"))
    r.threshold("migration_bandwidth_bytes_per_second",
                "Neat's network_migration_bandwidth, for its minimum migration time: memory / bandwidth")
    r.record("domain:libvirt_migration_time_seconds:estimate", """
        libvirt_domain_memory_current_bytes
          / on (instance, job) group_left ()
        instance:libvirt_migration_bandwidth:bytes_per_second
        """)
    return [{"name": "libvirt-capacity", "rules": r.rules}]


def guest_series(cfg: MixinConfig) -> Dict[str, str]:
    """The guest group's recorded series whose names carry their window."""
    w = cfg.windows
    return {"swap_in": "domain:libvirt_memory_swap_in_bytes:rate" + w["guest_swap_in"],
            "read_latency": "domain:libvirt_disk_read_latency_seconds:mean" + w["disk_latency"],
            "write_latency": "domain:libvirt_disk_write_latency_seconds:mean" + w["disk_latency"],
            "read_requests": "domain:libvirt_disk_read_requests:rate" + w["disk_latency"],
            "write_requests": "domain:libvirt_disk_write_requests:rate" + w["disk_latency"],
            "interface_errors": "domain:libvirt_interface_errors:rate" + w["interface_errors"]}


def _guest_memory_alerts(r: _Rules, s: Dict[str, str]) -> None:
    """The guest group's two memory alerts: pressure, and stale balloon statistics."""
    r.alert("LibvirtDomainGuestMemoryPressure", """
        (
            domain:libvirt_memory_usable:ratio
              < on (instance, job) group_left ()
            instance:libvirt_guest_usable_memory_threshold:ratio
        )
        or
        (
            %s
              > on (instance, job) group_left ()
            instance:libvirt_guest_swap_in_threshold:bytes_per_second
        )
        """ % s["swap_in"], "warning", "Guest {{ $labels.domain }} on {{ $labels.instance }} is short of memory",
            """For %s the guest {{ $labels.domain }} has reported little usable memory (under the threshold
            share of what it sees) or has been swapping in. Give it more memory (virsh setmem up to its
            maximum, or a bigger flavor) or find what grew inside it.""" % r.f("LibvirtDomainGuestMemoryPressure"),
            comment="Only guests whose balloon driver reports memory statistics have these series at all.")
    r.alert("LibvirtDomainGuestMemoryStatsStale", """
        libvirt_domain_memory_stats_last_update_timestamp_seconds
          unless on (instance, job, domain)
        changes(libvirt_domain_memory_stats_last_update_timestamp_seconds[%s]) > 0
          and on (instance, job, domain)
        libvirt_domain_state == 1
        """ % r.w("guest_memory_stats"), "warning",
            "Memory statistics of {{ $labels.domain }} on {{ $labels.instance }} are stale",
            """The balloon driver of the running guest {{ $labels.domain }} has not updated its memory
            statistics for %s ({{ if eq $value 0.0 }}it never has since QEMU started{{ else }}last at {{
            $value | humanizeTimestamp }}{{ end }}): the guest memory panels and
            LibvirtDomainGuestMemoryPressure are blind for it. Usually the statistics period is 0; set it
            with virsh dommemstat {{ $labels.domain }} --period 10 --live --config, and check the guest's
            virtio-balloon driver.""" % r.sw("guest_memory_stats"),
            comment="A running guest whose balloon stats did not change within the window (counted by changes,\n"
                    "so no clock has to agree with the guest's or the exporter's); 0 means never reported.")



def guest_group(cfg: MixinConfig) -> List[Dict[str, Any]]:
    r = _Rules(cfg)
    s = guest_series(cfg)
    lat = r.w("disk_latency")
    r.record("domain:libvirt_memory_usable:ratio",
             "libvirt_domain_memory_usable_bytes / libvirt_domain_memory_available_bytes")
    r.record(s["swap_in"], "rate(libvirt_domain_memory_swap_in_bytes_total[%s])" % r.w("guest_swap_in"))
    for i, direction in enumerate(("read", "write")):
        r.record(s[direction + "_latency"], """
            rate(libvirt_domain_block_%s_time_seconds_total[%s])
            / rate(libvirt_domain_block_%s_requests_total[%s])
            """ % (direction, lat, direction, lat),
                 comment="" if i else "mean time per request, and the request rate, per disk and direction")
    for direction in ("read", "write"):
        r.record(s[direction + "_requests"], "rate(libvirt_domain_block_%s_requests_total[%s])" % (direction, lat))
    ie = r.w("interface_errors")
    r.record(s["interface_errors"], """
        rate(libvirt_domain_interface_receive_errors_total[{w}])
        + rate(libvirt_domain_interface_transmit_errors_total[{w}])
        + rate(libvirt_domain_interface_receive_drops_total[{w}])
        + rate(libvirt_domain_interface_transmit_drops_total[{w}])
        """.format(w=ie), comment="errors and drops per second, both directions together, per interface")
    for key in ("guest_usable_memory_ratio", "guest_swap_in_bytes_per_second", "disk_latency_seconds",
                "disk_busy_requests_per_second", "interface_errors_per_second"):
        r.threshold(key)
    _guest_memory_alerts(r, s)
    slow_and_busy = """
        (
            (
                {latency}
                  > on (instance, job) group_left ()
                instance:libvirt_disk_latency_threshold:seconds
            )
            and
            (
                {requests}
                  >= on (instance, job) group_left ()
                instance:libvirt_disk_busy_threshold:requests_per_second
            )
        )"""
    either = "\nor".join(textwrap.dedent(slow_and_busy).format(latency=s[d + "_latency"], requests=s[d + "_requests"])
                         for d in ("read", "write"))
    r.alert("LibvirtDomainDiskLatencyHigh", either,
            "warning",
            "Disk {{ $labels.target }} of {{ $labels.domain }} on {{ $labels.instance }} is slow",
            """Requests to {{ $labels.target }} of {{ $labels.domain }} took {{ $value | humanizeDuration }}
            each on average over the last %s, at a busy rate, for %s. Check the storage under it (the host's
            iostat, the array or network storage), and whether neighbours saturate it."""
            % (spoken(lat), r.f("LibvirtDomainDiskLatencyHigh")))
    r.alert("LibvirtDomainInterfaceErrors", """
        %s
          > on (instance, job) group_left ()
        instance:libvirt_interface_errors_threshold:per_second
        """ % s["interface_errors"], "warning",
            "Interface {{ $labels.interface }} of {{ $labels.domain }} on {{ $labels.instance }} has errors or drops",
            """{{ $labels.interface }} of {{ $labels.domain }} has counted errors or dropped packets (either
            direction) for %s, {{ $value | humanize }}/s now. Drops on the host side mean the guest does not
            read its queue fast enough (CPU starved, or too few queues); errors point at the tap or bridge:
            check the host's interface and the guest's driver.""" % r.f("LibvirtDomainInterfaceErrors"))
    return [{"name": "libvirt-guest", "rules": r.rules}]


def block_group(cfg: MixinConfig) -> List[Dict[str, Any]]:
    r = _Rules(cfg)
    r.threshold("volume_headroom_ratio")
    r.threshold("disk_allocation_ratio")
    r.alert("LibvirtVolumeExtensionNeeded", """
        libvirt_domain_block_extension_needed{backing_index=""} == 1
        or
        (
            libvirt_domain_block_extension_needed{backing_index!=""} == 1
          and
            delta(libvirt_domain_block_allocation_bytes{backing_index!=""}[%s]) > 0
        )
        """ % r.w("backing_growth"), "warning",
            "Thin volume {{ $labels.domain }}/{{ $labels.target }} needs extending on {{ $labels.instance }}",
            """Headroom (physical - allocation) of {{ $labels.domain }} disk {{ $labels.target }} {{ with
            $labels.backing_index }}layer {{ . }} {{ end }}has been below the watermark limit for %s and
            nothing extended the volume. When the guest writes past the end of the storage it is paused with
            ENOSPC.""" % r.f("LibvirtVolumeExtensionNeeded"),
            comment="vdsm would extend the volume now. The top layer is where the guest writes; a backing layer is\n"
                    "written only while a block commit merges into it, so it counts only while its allocation moves\n"
                    "(a base volume reduced to its data after a merge sits under the limit harmlessly).")
    r.alert("LibvirtVolumeHeadroomLow", """
        libvirt_domain_block_watermark_headroom_bytes
          < libvirt_domain_block_capacity_bytes
            * on (instance, job) group_left ()
            instance:libvirt_volume_headroom_threshold:ratio
        and
        libvirt_domain_block_watermark_headroom_bytes
          < libvirt_domain_block_watermark_limit_bytes
        """, "critical",
            "Thin volume {{ $labels.domain }}/{{ $labels.target }} almost full on {{ $labels.instance }}",
            """{{ $labels.domain }} disk {{ $labels.target }} has {{ $value | humanize1024 }}B of storage
            left above its highest written offset, under the headroom threshold share of its capacity
            (instance:libvirt_volume_headroom_threshold:ratio).""",
            comment="Close to full whatever the extension rule says. The second clause keeps a healthy large volume\n"
                    "quiet: its normal headroom (under one chunk) can be below the threshold share of a big capacity.")
    r.alert("LibvirtDiskAllocationNearCapacity", """
        (
            libvirt_domain_block_allocation_bytes{backing_index=""}
          > libvirt_domain_block_capacity_bytes{backing_index=""}
            * on (instance, job) group_left ()
            instance:libvirt_disk_allocation_threshold:ratio
        )
        and on (instance, job, domain, target)
          libvirt_domain_block_info{format="qcow2", backing_index=""}
        """, "warning",
            "Disk {{ $labels.domain }}/{{ $labels.target }} is nearly fully allocated on {{ $labels.instance }}",
            """The highest written offset of {{ $labels.domain }} disk {{ $labels.target }} is {{ $value |
            humanize1024 }}B, over the allocation threshold share of its virtual size
            (instance:libvirt_disk_allocation_threshold:ratio).""",
            comment="The guest has written close to the end of its virtual disk (qcow2 allocates host clusters in\n"
                    "order, so its allocation tracks data written; a raw layer's is the highest guest offset, which\n"
                    "a GPT backup header at the last sector puts at the end at once: not qcow2, not alerted).")
    r.alert("LibvirtDiskNoSpace", """
        increase(libvirt_domain_block_io_errors_total{reason="enospc"}[%s]) > 0
        or
        (
            sgn(libvirt_domain_block_io_errors_total{reason="enospc"}) > 0
          and on (instance, job, domain)
            (libvirt_domain_state == 3 and libvirt_domain_state_reason == 5)
        )
        """ % r.w("disk_enospc"), "critical",
            "Disk {{ $labels.domain }}/{{ $labels.target }} ran out of space on {{ $labels.instance }}",
            """QEMU reported ENOSPC on {{ $labels.domain }} disk {{ $labels.target }}: a write went past the
            end of its storage. With the default error policy the guest is now paused until the volume is
            extended and the domain resumed.""",
            comment="Each ENOSPC I/O error, per disk, for the window after it, and for as long as the domain stays\n"
                    "paused on an I/O error after one (the series is 0 before the first error, so the first is\n"
                    "seen). It inhibits LibvirtDomainPausedOnIOError in alertmanager.yml: one incident, one page.")
    r.alert("LibvirtDomainPausedOnIOError", "libvirt_domain_state == 3 and libvirt_domain_state_reason == 5",
            "critical", "{{ $labels.domain }} paused on an I/O error on {{ $labels.instance }}",
            """{{ $labels.domain }} has been paused by an I/O error for %s (see LibvirtDiskNoSpace and
            libvirt_domain_block_io_errors_total for the disk and reason). Fix the storage (extend a full thin
            volume), then resume the domain.""" % r.f("LibvirtDomainPausedOnIOError"),
            comment="libvirt_domain_state 3 = paused, libvirt_domain_state_reason 5 = VIR_DOMAIN_PAUSED_IOERROR.")
    return [{"name": "libvirt-block", "rules": r.rules}]


def numa_group(cfg: MixinConfig) -> List[Dict[str, Any]]:
    r = _Rules(cfg)
    r.record("domain:libvirt_numa_remote_memory:ratio", """
        (
            sum without (cell) (
                libvirt_domain_numa_memory_bytes
              and on (instance, job, domain, cell)
                (libvirt_domain_numa_vcpus == 0)
            )
          or
            0 * sum without (cell) (libvirt_domain_numa_memory_bytes)
        )
        / sum without (cell) (libvirt_domain_numa_memory_bytes)
        """, comment="memory on cells with no vCPU of the domain / all its memory (0 when every byte is local)")
    r.record("instance:libvirt_numa_cells:count", "count without (cell) (libvirt_host_numa_cell_memory_bytes)")
    r.threshold("numa_remote_memory_ratio")
    r.alert("LibvirtDomainNumaRemoteMemory", """
        (
            domain:libvirt_numa_remote_memory:ratio
              > on (instance, job) group_left ()
            instance:libvirt_numa_remote_memory_threshold:ratio
        )
        and on (instance, job) (instance:libvirt_numa_cells:count > 1)
        """, "warning", "Memory of {{ $labels.domain }} on {{ $labels.instance }} is mostly on remote NUMA cells",
            """{{ $value | humanizePercentage }} of the resident memory of {{ $labels.domain }} lies on host
            cells where none of its vCPUs ran, for %s. Pin its vCPUs and memory to one cell (<numatune> and
            <cputune> in the domain XML, virsh numatune / vcpupin), or give it a guest NUMA topology that
            matches the host's.""" % r.f("LibvirtDomainNumaRemoteMemory"),
            comment="Only hosts with more than one NUMA cell can misplace memory: the alert ignores the others.")
    return [{"name": "libvirt-numa", "rules": r.rules}]


def vcpu_group(cfg: MixinConfig) -> List[Dict[str, Any]]:
    r = _Rules(cfg)
    r.record("domain:libvirt_vcpu_steal:ratio",
             "avg without (vcpu) (rate(libvirt_domain_vcpu_delay_seconds_total[%s]))"
             " or rate(libvirt_domain_vcpus_delay_seconds_total[%s]) / libvirt_domain_vcpus"
             % (r.w("vcpu_steal"), r.w("vcpu_steal")),
             comment="Σ over vCPUs of delay seconds per second, averaged over the domain's vCPUs (from the"
                     " per-domain sum where --no-collector.vcpu.per-vcpu drops the per-vCPU series).")
    r.threshold("vcpu_steal_ratio")
    r.alert("LibvirtDomainVcpuSteal", """
        domain:libvirt_vcpu_steal:ratio
          > on (instance, job) group_left ()
        instance:libvirt_vcpu_steal_threshold:ratio
        """, "warning", "vCPUs of {{ $labels.domain }} on {{ $labels.instance }} wait for a host CPU",
            """The vCPUs of {{ $labels.domain }} spent {{ $value | humanizePercentage }} of the last %s waiting
            in {{ $labels.instance }}'s run queue, above the threshold for %s: other VMs or host work take its
            CPU time. Look for the busiest neighbours (libvirt_domain_cpu_usage_mhz, the host dashboard's
            overcommit panel), pin or move the domain, or lower the host's vCPU overcommit."""
            % (r.sw("vcpu_steal"), r.f("LibvirtDomainVcpuSteal")))
    return [{"name": "libvirt-vcpu", "rules": r.rules}]


def neat_group(cfg: MixinConfig) -> List[Dict[str, Any]]:
    r = _Rules(cfg)
    r.alert("LibvirtHostUnderloaded", """
        (
            instance:libvirt_cpu_utilization:avg
              <= on (instance, job) group_left ()
            instance:libvirt_cpu_underload_threshold:ratio
        )
        and on (instance, job) (instance:libvirt_running_domains:count >= 1)
        """, "info", "Host {{ $labels.instance }} is underloaded: a candidate to empty and power down",
            """{{ $labels.instance }} ran at {{ $value | humanizePercentage }} of its CPU capacity on average over
            the last %s, at or under Neat's underload threshold, with VMs on it, for %s. Neat would migrate its
            VMs away and switch the host off (reason 0): live-migrate them to hosts with room and power the host
            down, or leave it as spare capacity.""" % (r.sw("cpu_utilization"), r.f("LibvirtHostUnderloaded")))
    r.alert("LibvirtMigrationCandidate", """
        bottomk by (instance, job) (1,
            libvirt_domain_memory_current_bytes
          - on (instance, job, domain)
            (libvirt_domain_cpu_usage_mhz / 1000)
        )
        and on (instance, job)
          (
              instance:libvirt_cpu_total_mhz:sum
                > on (instance, job) group_left ()
              instance:libvirt_cpu_overload_threshold:mhz
          )
        unless on (instance, job)
          (instance:libvirt_domains_without_mhz:count > 0)
        """, "warning", "Move {{ $labels.domain }} off overloaded host {{ $labels.instance }}",
            """{{ $labels.instance }} is overloaded (LibvirtHostCpuOverload). By Neat's minimum-migration-time
            policy the VM to live-migrate first is {{ $labels.domain }}, the one with the least memory ({{
            $value | humanize1024 }}B); at instance:libvirt_migration_bandwidth:bytes_per_second its migration
            takes about {{ with printf
            `domain:libvirt_migration_time_seconds:estimate{instance="%s",job="%s",domain="%s"}` $labels.instance
            $labels.job $labels.domain | query }}{{ . | first | value | humanizeDuration }}{{ end }}. Migrate it
            to a host below the threshold, then see whether the overload clears.""",
            comment="The VM to move off an overloaded host: least memory (fastest to migrate); among equals the\n"
                    "busiest, for which the score subtracts its MHz / 1000: under 1 KiB, libvirt's unit of memory.")
    return [{"name": "libvirt-neat", "rules": r.rules}]


def job_group(cfg: MixinConfig) -> List[Dict[str, Any]]:
    r = _Rules(cfg)
    r.threshold("migration_dirty_to_transfer_ratio")
    r.threshold("migration_iterations")
    r.alert("LibvirtDomainMigrationNotConverging", """
        (
            libvirt_domain_job_memory_dirty_rate_bytes_per_second
          >=
            libvirt_domain_job_memory_transfer_rate_bytes_per_second
              * on (instance, job) group_left ()
            instance:libvirt_migration_dirty_rate_threshold:ratio
        )
        and
        (
            libvirt_domain_job_memory_iteration
          >= on (instance, job) group_left ()
            instance:libvirt_migration_iterations_threshold:count
        )
        """, "warning", "Migration of {{ $labels.domain }} from {{ $labels.instance }} does not converge",
            """{{ $labels.domain }} has dirtied memory as fast as the migration sends it ({{ $value |
            humanize1024 }}B/s) for %s, pass after pass: the migration will not finish by itself. Raise its
            bandwidth (virsh migrate-setspeed), allow a longer downtime (virsh migrate-setmaxdowntime),
            switch to post-copy (virsh migrate-postcopy) or abort it (virsh domjobabort) and migrate when
            the guest is quieter.""" % r.f("LibvirtDomainMigrationNotConverging"),
            comment="A live migration that has made several passes over guest memory while the guest dirties it at\n"
                    "the rate it is sent. Why a ratio under 1: QEMU counts a page dirtied several times in one pass\n"
                    "once, at the end of the pass, so for a guest that outruns the migration the dirty rate levels\n"
                    "off at the transfer rate, not above it (0.96 x measured); a converging one stays well below.")
    failed = 'libvirt_domain_jobs_completed_total{outcome=~"failed|cancelled"}'
    r.alert("LibvirtDomainJobFailed", """
        increase(%(c)s[%(w)s]) > 0
        or
        (
            %(c)s
          unless
            %(c)s offset %(w)s
        )
        """ % {"c": failed, "w": r.w("job_failed")}, "warning",
            "A {{ $labels.operation }} job on {{ $labels.instance }} ended {{ $labels.outcome }}",
            """A domain job ({{ $labels.operation }}) on {{ $labels.instance }} did not complete within the last
            %s. The exporter's log names the domain ("job failed: domain ..."); `virsh domjobinfo --completed
            --anystats DOMAIN` and libvirtd's log say why. A failed migration leaves the VM running on the
            source.""" % r.sw("job_failed"),
            comment="A job that ended without completing. The counter carries no domain (a domain that migrated\n"
                    "away would leave a series behind for ever): the exporter's log names it. A counter that\n"
                    "appears at its first failure has no earlier sample for increase(), hence the second arm.")
    return [{"name": "libvirt-job", "rules": r.rules}]


def perfmon_group(cfg: MixinConfig) -> List[Dict[str, Any]]:
    r = _Rules(cfg)
    r.alert("PerfmonAlarm", """
        label_replace(label_replace(label_replace(
            libvirt_perfmon_alarm_value,
          "severity", "info", "priority", ".*"),
          "severity", "warning", "priority", "[34]"),
          "severity", "critical", "priority", "-[0-9]+|[0-2]")
        """, "",
            "perfmon alarm: {{ $labels.object }}{{ with $labels.domain }} {{ . }}{{ end }} {{ $labels.variable }} "
            "(priority {{ $labels.priority }})",
            """The perfmon engine on {{ $labels.instance }} sent an alarm for {{ $labels.object }}{{ with
            $labels.domain }} {{ . }}{{ end }}: {{ $labels.variable }} was {{ $value }} at {{ $labels.alarm_time
            }} (Unix seconds), beyond its alarm_trigger_level for its alarm_trigger_period (see the perfmon
            config given with --perfmon.config). The next alarm of this variable comes no sooner than its
            alarm_auto_inhibit_period.""",
            comment="Severity from XenServer's priorities: 1-2 critical, 3-4 warning, 5 info (below 1: critical,\n"
                    "anything else: info). The value is the variable's value that raised the alarm. `for` is 0:\n"
                    "the engine has already applied perfmon's trigger period; each alarm is an event.")
    return [{"name": "perfmon", "rules": r.rules}]


# --- files ------------------------------------------------------------------------------------------

_HEADERS = {
    "exporter": """The exporter and libvirt themselves.""",
    "cpu": """Host CPU overload, with OpenStack Neat's data-collector semantics:
  total MHz = Σ per-VM MHz + hypervisor overhead, overloaded when total > threshold × capacity.
Also Neat's utilization series, which the host dashboard shows and the optional neat group decides on.""",
    "capacity": """Overcommit and host memory, for capacity planning and one alert (on MemAvailable), and Neat's
migration time estimate.""",
    "guest": """Trouble inside or at the edge of a guest: memory pressure its balloon driver reports, stale balloon
statistics, slow disks, network errors and drops.""",
    "block": """Thin-provisioned disks and what they exist to prevent: a guest paused because its volume filled up.

The watermark series (headroom, limit, extension_needed) exist only for chunked volumes — qcow2
straight on block storage (an LV, LUN or loop device), which nothing grows by itself. A qcow2 file
on a filesystem grows with its writes and has none; raw images, network disks and CD-ROMs neither.
vdsm's rule (in the exporter, flags --collector.watermark.chunk-mib / .utilization-percent):
extend when headroom = physical - allocation < limit = chunk x (100 - utilization%) / 100.""",
    "numa": """NUMA misplacement: the share of a domain's resident memory on host cells where none of its vCPUs
last ran (remote accesses cost latency and interconnect bandwidth).""",
    "vcpu": """Noisy neighbours: how long a domain's vCPUs wait in the host's run queue (steal, from the
kernel's schedstat delay, libvirt's vcpu.N.delay) per second of wall time.""",
    "neat": """OpenStack Neat's consolidation decisions (its local manager's `execute`), from the exporter's MHz
(an optional group: most hosts of an ordinary fleet are "underloaded" by Neat's measure):
  underload: the average utilization over the utilization window <= the underload threshold → empty
             the host (reason 0)
  overload:  LibvirtHostCpuOverload (cpu.rules.yml, reason 1), and which VM to move: Neat's
             minimum-migration-time selection, the VM with the least memory (ties: the most MHz)

Where this differs from Neat: Neat decides once per local-manager run on the last n samples; these
are alerts, evaluated continuously, with `for` instead of a run interval. Neat skips a host whose
VMs' MHz it does not know yet; here a running VM without an MHz value (new or restarted) cannot be
named a candidate, and a host with such a VM names none, so neither alert flaps on churn (the total
MHz rule keeps the utilization continuous through churn: see cpu.rules.yml).""",
    "job": """Domain jobs (the job collector, --collector.job): live migrations that cannot converge, and jobs
that ended without completing. Job statistics exist on the job's source host only: an outgoing
migration shows on the host it leaves.""",
    "perfmon": """PerfmonAlarm: one Alertmanager notification per alarm the exporter's perfmon engine sends
(an optional group: it needs the engine, virt-exporter --perfmon.config FILE).

The engine runs XenServer perfmon's state machine, auto-inhibit included, and exposes each alarm it
sends as a series of its own, libvirt_perfmon_alarm_value{object, domain, variable, priority,
alarm_time}, for --perfmon.alarm-retention seconds (default 240) on its own clock, then drops it.
This rule only selects those series: every alarm is one alert whose labels carry its identity
(alarm_time is the engine's time of the alarm), firing while the series is exposed. Nothing compares
times, so the exporter's and Prometheus's clocks need not agree.

What "exactly once" needs (docs/perfmon.md, "Getting notified"):
  - retention > 3 x scrape interval: after one failed scrape in a row, two good ones still see the
    alarm (an evaluation that runs while a scrape is in flight sees the one before, so a single
    sighting can be missed); the default 240 s covers scrape intervals up to 60 s;
  - any scrape and evaluation interval from 5 s to 60 s; no rule group interval of its own;
  - HA pairs: both replicas send the same labels (drop the replica's external label in
    alert_relabel_configs), Alertmanager merges them;
  - the perfmon route in alertmanager.yml: group_by the alarm's identity, group_wait shorter than
    retention - 3 x scrape interval, group_interval longer than retention + 2 x scrape interval + 1m
    (so the one flush after the first never falls while one replica has resolved the alert and the
    other still sends it firing), send_resolved false.""",
}

_BUILDERS = {"exporter": exporter_group, "cpu": cpu_group, "capacity": capacity_group, "guest": guest_group,
             "block": block_group, "numa": numa_group, "vcpu": vcpu_group, "job": job_group, "neat": neat_group,
             "perfmon": perfmon_group}
GROUPS = tuple(_BUILDERS)

_GENERATED = ("Generated by `virt-exporter mixin` from its knobs: change the knobs and regenerate rather than\n"
              "editing this file (docs/alerts.md). Every threshold is a recorded series a host can override.")


def rule_files(cfg: MixinConfig) -> Dict[str, str]:
    """Relative path → text of every rules file: enabled groups at the top, disabled optional groups
    under optional/ (complete files, not loaded by a ``*.rules.yml`` glob)."""
    out = {}
    for name, build in _BUILDERS.items():
        where = "" if name not in OPTIONAL_GROUPS or cfg.enabled(name) else "optional/"
        header = _HEADERS[name] + "\n\n" + _GENERATED
        if where:
            header += "\nThis group is off in the knobs (groups.%s: false): load this file, or turn it on." % name
        out["%s%s.rules.yml" % (where, name)] = render_rule_file(header, build(cfg))
    return out
