"""The status page at ``/``: the host and its VMs at a glance, from the sample the exporter holds.

``build_view`` turns (scrape context, collector options, exporter health) into a ``StatusView``: the
data the page shows (``Accept: application/json`` gets it as JSON), stamped with the time it was built.
Its figures come from the calculations the collectors use (calc/), so the page and /metrics agree.
``render_html`` turns it into one self-contained page: inline CSS and a few lines of JavaScript
(sortable columns, an auto-refresh checkbox that is off by default), no external asset, every string
escaped.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import html
import json
import math
import time
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from . import __version__
from .calc.mhz import CpuUsage, cpu_usage
from .calc.numa import host_cell_cpus, live_placement, vcpu_cells
from .calc.steal import vcpu_steal_ratio
from .calc.watermark import block_layers, layer_watermark
from .collectors.base import ScrapeContext
from .collectors.families import KIB
from .collectors.job import dirty_rate_bytes_per_s
from .collectors.watermark import policy_from_options
from .sample import DomainStats, HostMemory, JobReading, Sample

if TYPE_CHECKING:
    from .perfmon.engine import VariableRow

STATE_NAMES = {0: "no state", 1: "running", 2: "blocked", 3: "paused", 4: "shutting down", 5: "shut off",
               6: "crashed", 7: "suspended"}
# virDomainPausedReason
PAUSED_REASONS = {0: "unknown", 1: "user", 2: "migration", 3: "save", 4: "dump", 5: "I/O error", 6: "watchdog",
                  7: "from snapshot", 8: "shutting down", 9: "snapshot", 10: "crashed", 11: "starting up",
                  12: "post-copy", 13: "post-copy failed", 14: "API error"}


# --- the view: what the page and its JSON show ------------------------------------------------------
# Field names are the JSON's keys.

@dataclasses.dataclass(frozen=True)
class CpuView:
    """The host's CPU in MHz (calc.mhz, as the cpu_usage collector exports it); None = no value."""

    cpus: Optional[int]
    core_mhz: Optional[float]
    capacity_mhz: Optional[float] = None
    busy_mhz: Optional[float] = None
    vms_mhz: Optional[float] = None
    overhead_mhz: Optional[float] = None


@dataclasses.dataclass(frozen=True)
class MemoryView:
    total_bytes: Optional[int]
    free_bytes: Optional[int]


@dataclasses.dataclass(frozen=True)
class CellRow:
    """One host NUMA cell: its CPU count and memory (None where getMemoryStats(cell) gave none)."""

    cell: int
    cpus: int
    total_bytes: Optional[int]
    free_bytes: Optional[int]


@dataclasses.dataclass(frozen=True)
class HostView:
    hostname: str
    libvirt_up: bool
    error: str
    libvirt_version: str
    hypervisor_version: str
    cpu_model: str
    cpu: CpuView
    memory: MemoryView
    cells: Tuple[CellRow, ...]


@dataclasses.dataclass(frozen=True)
class Health:
    """The exporter's own health, as the exporter hands it over."""

    sample_age_s: Optional[float]
    bulk_stats_s: Optional[float]
    unresponsive: int
    collector_errors: Mapping[str, int]
    reconnects: int


@dataclasses.dataclass(frozen=True)
class DiskRow:
    """A disk as the guest sees it (its top layer); headroom and extension only for a thin one."""

    target: str
    allocation_bytes: Optional[int]
    physical_bytes: Optional[int]
    capacity_bytes: Optional[int]
    thin: bool = False
    headroom_bytes: Optional[int] = None
    extension_needed: Optional[bool] = None


@dataclasses.dataclass(frozen=True)
class DomainRow:
    """One VM: state, CPU (MHz, steal as a share of wall time), memory, NUMA cells, disks, perfmon."""

    name: str
    uuid: str
    state: str
    reason: str  # why a paused domain is paused; "" otherwise
    unresponsive: bool
    mhz: Optional[float]
    vcpus: Optional[int]
    steal: Optional[float]
    memory_current_bytes: Optional[int]
    memory_rss_bytes: Optional[int]
    numa_memory_cells: Tuple[int, ...]
    numa_vcpu_cells: Tuple[int, ...]
    disks: Tuple[DiskRow, ...]
    perfmon: Tuple[VariableRow, ...]


@dataclasses.dataclass(frozen=True)
class JobRow:
    """A running domain job (a migration on its source host), as the job collector reads it."""

    domain: str
    operation: str
    type: str
    elapsed_s: Optional[float]
    processed_bytes: Optional[int]
    remaining_bytes: Optional[int]
    transfer_bytes_per_s: Optional[float]
    dirty_bytes_per_s: Optional[float]
    iteration: Optional[int]
    error: str


@dataclasses.dataclass(frozen=True)
class StatusView:
    version: str
    generated_unix_s: float
    host: HostView
    health: Health
    domains: Tuple[DomainRow, ...]
    alarms: Tuple[VariableRow, ...]
    jobs: Tuple[JobRow, ...]


def build_view(ctx: ScrapeContext, collector_options: Mapping[str, Mapping[str, Any]], health: Health,
               clock: Callable[[], float] = time.time) -> StatusView:
    """Everything the page shows, from one scrape context; disks are judged with the watermark
    collector's options (``collector_options``: every collector's); ``clock`` (wall, Unix seconds)
    stamps it."""
    current = ctx.current
    watermark_options = collector_options.get("watermark", {})
    usage = cpu_usage(*ctx.whole_pair()) if current.up else None
    cell_cpus = host_cell_cpus(current.host, ctx.numa)
    domains = tuple(_domain_view(ctx, dom, usage.domain_mhz.get(uuid) if usage else None, cell_cpus,
                                 watermark_options)
                    for uuid, dom in sorted(current.domains.items(), key=lambda kv: kv[1].name))
    return StatusView(version=__version__, generated_unix_s=clock(), host=_host_view(current, usage, cell_cpus),
                      health=health, domains=domains, alarms=_alarms(ctx), jobs=_jobs(ctx))


def _jobs(ctx: ScrapeContext) -> Tuple[JobRow, ...]:
    if ctx.jobs is None:
        return ()
    return tuple(_job(r) for r in sorted(ctx.jobs.active.values(), key=lambda r: r.name)
                 if ctx.keeps_domain(r.name))


def _job(reading: JobReading) -> JobRow:
    st = reading.stats
    elapsed_ms = st.get("time_elapsed")
    return JobRow(domain=reading.name, operation=reading.operation, type=reading.type,
                  elapsed_s=elapsed_ms / 1000.0 if elapsed_ms is not None else None,
                  processed_bytes=st.get("data_processed"), remaining_bytes=st.get("data_remaining"),
                  transfer_bytes_per_s=st.get("memory_bps"), dirty_bytes_per_s=dirty_rate_bytes_per_s(dict(st)),
                  iteration=st.get("memory_iteration"), error=reading.error)


def _host_view(current: Sample, usage: Optional[CpuUsage], cell_cpus: Mapping[int, List[int]]) -> HostView:
    facts, node = current.host, current.node
    cpu = CpuView(cpus=node.cpus if node else None, core_mhz=node.core_mhz if node else None)
    if usage is not None:
        cpu = dataclasses.replace(
            cpu, capacity_mhz=usage.capacity_mhz, busy_mhz=usage.host_busy_mhz,
            vms_mhz=sum(usage.domain_mhz.values()) if usage.host_busy_mhz is not None else None,
            overhead_mhz=usage.hypervisor_overhead_mhz)
    cells = []
    for cell in sorted(set(cell_cpus) | set(current.cell_memory)):
        memory = _memory(current.cell_memory.get(cell))
        cells.append(CellRow(cell=cell, cpus=len(cell_cpus.get(cell, [])), total_bytes=memory.total_bytes,
                             free_bytes=memory.free_bytes))
    return HostView(
        hostname=facts.hostname if facts else "", libvirt_up=current.up, error=current.error,
        libvirt_version=facts.libvirt_version if facts else "",
        hypervisor_version=facts.hypervisor_version if facts else "", cpu_model=facts.cpu_model if facts else "",
        cpu=cpu, memory=_memory(current.host_memory), cells=tuple(cells))


def _memory(memory: Optional[HostMemory]) -> MemoryView:
    """A getMemoryStats reading in bytes; None for both without one."""
    return MemoryView(total_bytes=memory.total_kib * KIB if memory else None,
                      free_bytes=memory.free_kib * KIB if memory else None)


def _domain_view(ctx: ScrapeContext, dom: DomainStats, mhz: Optional[float],
                 cell_cpus: Mapping[int, List[int]], watermark_options: Mapping[str, Any]) -> DomainRow:
    stats = dom.stats
    previous = ctx.previous.domains.get(dom.uuid) if ctx.previous is not None else None
    interval_s = ctx.current.monotonic_s - ctx.previous.monotonic_s if ctx.previous is not None else 0.0
    memory_cells: Tuple[int, ...] = ()
    cpu_cells: Tuple[int, ...] = ()
    placement = live_placement(ctx.numa, ctx.current, dom.uuid) if dom.active else None
    if placement is not None:
        if placement.memory_bytes_by_node:
            memory_cells = tuple(sorted(c for c, size in placement.memory_bytes_by_node.items() if size > 0))
        if placement.vcpu_cpus and cell_cpus:
            cpu_cells = tuple(sorted(set(vcpu_cells(placement.vcpu_cpus, cell_cpus).values())))
    perfmon: Tuple[VariableRow, ...] = ()
    if ctx.perfmon is not None:
        perfmon = tuple(r for r in ctx.perfmon.rows if r.uuid == dom.uuid)
    return DomainRow(
        name=dom.name, uuid=dom.uuid, state=STATE_NAMES.get(dom.state, str(dom.state)),
        reason=PAUSED_REASONS.get(dom.reason, str(dom.reason)) if dom.state == 3 else "",
        unresponsive=dom.uuid in ctx.current.unresponsive, mhz=mhz, vcpus=stats.get("vcpu.current"),
        steal=vcpu_steal_ratio(previous, dom, interval_s),
        memory_current_bytes=_kib(stats.get("balloon.current")), memory_rss_bytes=_kib(stats.get("balloon.rss")),
        numa_memory_cells=memory_cells, numa_vcpu_cells=cpu_cells,
        disks=_disks(ctx, dom, watermark_options) if dom.active else (), perfmon=perfmon)


def _kib(value: Any) -> Optional[int]:
    return None if value is None else int(value) * KIB


def _disks(ctx: ScrapeContext, dom: DomainStats, watermark_options: Mapping[str, Any]) -> Tuple[DiskRow, ...]:
    info = ctx.domain_info.get(dom.uuid)
    disks = {d.target: d for d in info.disks} if info is not None else {}
    policy = policy_from_options(watermark_options)
    out = []
    for layer in block_layers(dom):
        if layer.backing_index is not None:
            continue  # the page shows what the guest sees; backing layers are in /metrics
        disk = DiskRow(target=layer.target, allocation_bytes=layer.allocation_bytes,
                       physical_bytes=layer.physical_bytes, capacity_bytes=layer.capacity_bytes)
        wm = layer_watermark(policy, layer, disks)
        if wm is not None:
            disk = dataclasses.replace(disk, thin=True, headroom_bytes=wm.headroom_bytes,
                                       extension_needed=wm.extension_needed)
        out.append(disk)
    return tuple(out)


def _alarms(ctx: ScrapeContext) -> Tuple[VariableRow, ...]:
    """Perfmon variables that sent or inhibited an alarm, the most recent alarm first."""
    if ctx.perfmon is None:
        return ()
    rows = [r for r in ctx.perfmon.rows
            if (r.alarms_total or r.inhibited_total) and (not r.domain or ctx.keeps_domain(r.domain))]
    return tuple(sorted(rows, key=lambda r: -(r.last_alarm_s or 0.0)))


# --- HTML --------------------------------------------------------------------------------------------

CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:0;padding:0 1rem 2rem;color:#1d2430;background:#f6f7f9}
header{display:flex;flex-wrap:wrap;gap:.5rem 1.5rem;align-items:baseline;padding:.8rem 0}
h1{font-size:1.25rem;margin:0}h2{font-size:1.05rem;margin:1.4rem 0 .5rem}
a{color:#1f5fbf}.muted{color:#667085}.bad{color:#b42318;font-weight:600}.ok{color:#067647}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(15rem,1fr));gap:.8rem}
.card{background:#fff;border:1px solid #dde1e7;border-radius:6px;padding:.6rem .8rem}
.card dl{display:grid;grid-template-columns:auto 1fr;gap:.15rem .8rem;margin:0}.card dt{color:#667085}
.card dd{margin:0;font-variant-numeric:tabular-nums;overflow-wrap:anywhere}
.bar{display:flex;height:.9rem;border-radius:3px;overflow:hidden;background:#e4e7ec;margin:.4rem 0}
.bar span{display:block;height:100%}.vm{background:#2e90fa}.ovh{background:#f79009}
.legend span{margin-right:.8rem;white-space:nowrap}.legend i{display:inline-block;width:.7rem;height:.7rem;
border-radius:2px;margin-right:.25rem;vertical-align:-1px}
.scroll{overflow-x:auto;background:#fff;border:1px solid #dde1e7;border-radius:6px}
table{border-collapse:collapse;width:100%;font-variant-numeric:tabular-nums}
th,td{padding:.3rem .5rem;border-bottom:1px solid #eef0f3;text-align:left;vertical-align:top;white-space:nowrap}
td.name{white-space:normal;overflow-wrap:anywhere;min-width:8rem}
th{background:#f2f4f7;position:sticky;top:0;cursor:pointer;user-select:none}
th[aria-sort=ascending]::after{content:" \\25B2"}th[aria-sort=descending]::after{content:" \\25BC"}
td.num,th.num{text-align:right}tr.stuck td{background:#fef3f2}
.tag{display:inline-block;padding:0 .35rem;border-radius:3px;font-size:.8rem;background:#fee4e2;color:#b42318}
ul.plain{list-style:none;margin:0;padding:0}
"""

SCRIPT = """
document.querySelectorAll("table.sortable th").forEach(function (th, col) {
  th.addEventListener("click", function () {
    var table = th.closest("table"), body = table.tBodies[0];
    var dir = th.getAttribute("aria-sort") === "ascending" ? -1 : 1;
    table.querySelectorAll("th").forEach(function (h) { h.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", dir > 0 ? "ascending" : "descending");
    var key = function (tr) { var c = tr.cells[col]; return c.dataset.v !== undefined ? c.dataset.v : c.textContent; };
    var num = th.classList.contains("num");
    Array.from(body.rows).sort(function (a, b) {
      var x = key(a), y = key(b);
      if (num) { x = x === "" ? -Infinity : Number(x); y = y === "" ? -Infinity : Number(y); }
      return (x < y ? -1 : x > y ? 1 : 0) * dir;
    }).forEach(function (tr) { body.appendChild(tr); });
  });
});
var refresh = document.getElementById("refresh");
refresh.checked = location.search.indexOf("refresh=1") >= 0;
refresh.addEventListener("change", function () {
  location.search = refresh.checked ? "?refresh=1" : "";
});
if (refresh.checked) { setTimeout(function () { location.reload(); }, 15000); }
"""


# The page's one script, by its hash: nothing else may run (inline handlers included), and nothing
# is loaded from anywhere, even if a string slipped through escaping.
CONTENT_SECURITY_POLICY = ("default-src 'none'; style-src 'unsafe-inline'; img-src 'none'; "
                           "script-src 'sha256-%s'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
                           % base64.b64encode(hashlib.sha256(SCRIPT.encode("utf-8")).digest()).decode("ascii"))


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _mhz(value: Optional[float]) -> str:
    return "–" if value is None else "%.0f" % value


def _bytes(value: Optional[float]) -> str:
    if value is None:
        return "–"
    for unit, size in (("TiB", 2 ** 40), ("GiB", 2 ** 30), ("MiB", 2 ** 20), ("KiB", 2 ** 10)):
        if abs(value) >= size:
            return "%.1f %s" % (value / size, unit)
    return "%d B" % value


def _rate(bytes_per_s: Optional[float]) -> str:
    return "–" if bytes_per_s is None else _bytes(bytes_per_s) + "/s"


def _share(value: Optional[float]) -> str:
    return "–" if value is None else "%.1f %%" % (100 * value)


def _seconds(value: Optional[float]) -> str:
    return "–" if value is None else "%.2f s" % value


def _when(unix_s: Optional[float]) -> str:
    return "–" if not unix_s else time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(unix_s))


def _td(text: str, sort: Any = None, cls: str = "") -> str:
    attrs = (' class="%s"' % cls if cls else "") + (' data-v="%s"' % _e(sort) if sort is not None else "")
    return "<td%s>%s</td>" % (attrs, text)


def _dl(items: List[Tuple[str, str]]) -> str:
    return "<dl>%s</dl>" % "".join("<dt>%s</dt><dd>%s</dd>" % (_e(k), v) for k, v in items)


def _cpu_card(cpu: CpuView) -> str:
    capacity = cpu.capacity_mhz or 0
    vms, ovh = cpu.vms_mhz, cpu.overhead_mhz
    bar = ""
    if capacity and vms is not None:
        bar = ('<div class="bar" role="img" aria-label="CPU use"><span class="vm" style="width:%.2f%%"></span>'
               '<span class="ovh" style="width:%.2f%%"></span></div>'
               '<div class="legend muted"><span><i class="vm"></i>VMs</span><span><i class="ovh"></i>hypervisor'
               ' overhead</span></div>') % (min(100.0, 100 * vms / capacity),
                                            min(100.0, 100 * (ovh or 0) / capacity))
    return '<div class="card"><strong>CPU (MHz)</strong>%s%s</div>' % (bar, _dl([
        ("capacity", "%s (%s × %s MHz)" % (_mhz(cpu.capacity_mhz), _e(cpu.cpus), _e(cpu.core_mhz))),
        ("busy", _mhz(cpu.busy_mhz)), ("Σ VMs", _mhz(vms)), ("hypervisor overhead", _mhz(ovh))]))


def _host_cards(host: HostView, health: Health) -> str:
    up = '<span class="ok">up</span>' if host.libvirt_up else '<span class="bad">down</span> %s' % _e(host.error)
    identity = '<div class="card"><strong>Host</strong>%s</div>' % _dl([
        ("hostname", _e(host.hostname)), ("libvirt", up), ("libvirt version", _e(host.libvirt_version)),
        ("QEMU version", _e(host.hypervisor_version)), ("CPU model", _e(host.cpu_model))])
    cells = "".join("<li>cell %s: %s of %s free, %s CPUs</li>" % (_e(c.cell), _bytes(c.free_bytes),
                                                                   _bytes(c.total_bytes), _e(c.cpus))
                    for c in host.cells)
    mem = '<div class="card"><strong>Memory</strong>%s<ul class="plain">%s</ul></div>' % (_dl([
        ("total", _bytes(host.memory.total_bytes)), ("free", _bytes(host.memory.free_bytes))]), cells)
    errors = sum(health.collector_errors.values())
    exporter = '<div class="card"><strong>Exporter</strong>%s</div>' % _dl([
        ("sample age", _seconds(health.sample_age_s)), ("bulk stats", _seconds(health.bulk_stats_s)),
        ("unresponsive domains", '<span class="%s">%d</span>' % ("bad" if health.unresponsive else "ok",
                                                                  health.unresponsive)),
        ("collector failures", '<span class="%s">%d</span>' % ("bad" if errors else "ok", errors)),
        ("reconnects to libvirt", _e(health.reconnects))])
    return '<section class="cards">%s%s%s%s</section>' % (identity, _cpu_card(host.cpu), mem, exporter)


DOMAIN_COLUMNS = ("VM", "state", "MHz", "vCPUs", "steal", "memory", "RSS", "NUMA memory", "NUMA vCPUs", "disks",
                  "perfmon")
NUMERIC = {"MHz", "vCPUs", "steal", "memory", "RSS"}


def _disk_cell(disks: Sequence[DiskRow]) -> str:
    items = []
    for d in disks:
        text = "%s: %s / %s / %s" % (_e(d.target), _bytes(d.allocation_bytes), _bytes(d.physical_bytes),
                                     _bytes(d.capacity_bytes))
        if d.thin:
            text += ", headroom %s" % _bytes(d.headroom_bytes)
            if d.extension_needed:
                text += ' <span class="tag">needs extension</span>'
        items.append("<li>%s</li>" % text)
    return '<ul class="plain">%s</ul>' % "".join(items)


def _perfmon_cell(variables: Sequence[VariableRow]) -> str:
    items = ["<li>%s: %s s to go%s</li>" % (_e(v.variable), _e("%.0f" % v.countdown_s),
                                            ", last alarm %s" % _e(_when(v.last_alarm_s))
                                            if v.last_alarm_s else "") for v in variables]
    return '<ul class="plain">%s</ul>' % "".join(items)


def _domain_tr(d: DomainRow) -> str:
    state = _e(d.state) + (" (%s)" % _e(d.reason) if d.reason else "")
    if d.unresponsive:
        state += ' <span class="tag">unresponsive</span>'
    cells = [
        _td(_e(d.name), cls="name"),
        _td(state),
        _td(_mhz(d.mhz), d.mhz if d.mhz is not None else "", "num"),
        _td(_e(d.vcpus if d.vcpus is not None else "–"), d.vcpus if d.vcpus is not None else "", "num"),
        _td(_share(d.steal), d.steal if d.steal is not None else "", "num"),
        _td(_bytes(d.memory_current_bytes), d.memory_current_bytes or "", "num"),
        _td(_bytes(d.memory_rss_bytes), d.memory_rss_bytes or "", "num"),
        _td(_e(", ".join(str(c) for c in d.numa_memory_cells) or "–")),
        _td(_e(", ".join(str(c) for c in d.numa_vcpu_cells) or "–")),
        _td(_disk_cell(d.disks)),
        _td(_perfmon_cell(d.perfmon)),
    ]
    return '<tr%s data-uuid="%s">%s</tr>' % (' class="stuck"' if d.unresponsive else "", _e(d.uuid),
                                             "".join(cells))


def _alarm_rows(alarms: Sequence[VariableRow]) -> str:
    if not alarms:
        return '<p class="muted">No perfmon alarm sent or inhibited since the exporter started.</p>'
    rows = "".join("<tr>%s</tr>" % "".join([
        _td(_e(_when(a.last_alarm_s)), a.last_alarm_s or 0), _td(_e(a.domain or "host"), cls="name"),
        _td(_e(a.variable)), _td(_e(a.priority)), _td(_e(a.alarms_total), a.alarms_total, "num"),
        _td(_e(a.inhibited_total), a.inhibited_total, "num")]) for a in alarms)
    return ('<div class="scroll"><table class="sortable"><thead><tr><th>last alarm</th><th>object</th><th>variable'
            '</th><th>priority</th><th class="num">sent</th><th class="num">inhibited</th></tr></thead><tbody>%s'
            '</tbody></table></div>') % rows


def _job_rows(jobs: Sequence[JobRow]) -> str:
    if not jobs:
        return '<p class="muted">No domain job running on this host.</p>'
    rows = "".join("<tr>%s</tr>" % "".join([
        _td(_e(j.domain), cls="name"), _td(_e(j.operation)), _td(_seconds(j.elapsed_s), j.elapsed_s, "num"),
        _td(_bytes(j.processed_bytes), j.processed_bytes, "num"),
        _td(_bytes(j.remaining_bytes), j.remaining_bytes, "num"),
        _td(_rate(j.transfer_bytes_per_s), j.transfer_bytes_per_s, "num"),
        _td(_rate(j.dirty_bytes_per_s), j.dirty_bytes_per_s, "num"),
        _td(_e(j.iteration if j.iteration is not None else "–"), j.iteration, "num")]) for j in jobs)
    return ('<div class="scroll"><table class="sortable" id="jobs"><thead><tr><th>VM</th><th>operation</th>'
            '<th class="num">elapsed</th><th class="num">processed</th><th class="num">remaining</th>'
            '<th class="num">transfer</th><th class="num">dirtied</th><th class="num">pass</th></tr></thead>'
            '<tbody>%s</tbody></table></div>') % rows


def render_html(view: StatusView, telemetry_path: str = "/metrics") -> bytes:
    head = "".join('<th%s scope="col">%s</th>' % (' class="num"' if c in NUMERIC else "", _e(c))
                   for c in DOMAIN_COLUMNS)
    body = "".join(_domain_tr(d) for d in view.domains)
    page = (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        "<title>%(title)s</title><style>%(css)s</style></head><body>"
        "<header><h1>%(title)s</h1><span class=\"muted\">virt_exporter %(version)s · %(generated)s</span>"
        '<a href="%(metrics)s">metrics</a><a href="/-/healthy">health</a>'
        '<label><input type="checkbox" id="refresh"> refresh every 15 s</label></header>'
        "%(cards)s<h2>VMs (%(count)d)</h2>"
        '<div class="scroll"><table class="sortable" id="domains"><thead><tr>%(head)s</tr></thead>'
        "<tbody>%(body)s</tbody></table></div>"
        "<h2>Running jobs</h2>%(jobs)s"
        "<h2>Perfmon alarms</h2>%(alarms)s"
        "<script>%(script)s</script></body></html>\n"
    ) % {
        "title": _e("%s — virt_exporter" % (view.host.hostname or "libvirt host")),
        "css": CSS, "version": _e(view.version), "generated": _e(_when(view.generated_unix_s)),
        "metrics": _e(telemetry_path), "cards": _host_cards(view.host, view.health), "count": len(view.domains),
        "head": head, "body": body, "alarms": _alarm_rows(view.alarms), "script": SCRIPT,
        "jobs": _job_rows(view.jobs),
    }
    return page.encode("utf-8")


def render_json(view: StatusView) -> bytes:
    data = dataclasses.asdict(view)
    data["alarms"] = [_perfmon_json(r) for r in view.alarms]
    for row, domain in zip(data["domains"], view.domains):
        row["perfmon"] = [_perfmon_json(r) for r in domain.perfmon]
    return (json.dumps(_finite(data), sort_keys=True, allow_nan=False) + "\n").encode("utf-8")


def _perfmon_json(row: VariableRow) -> Dict[str, Any]:
    """A perfmon variable under the keys this JSON has published since it first listed perfmon,
    which are not the engine's field names."""
    return {"object": row.object_type, "domain": row.domain, "variable": row.variable, "priority": row.priority,
            "value": row.value, "level": row.level, "countdown_s": row.countdown_s, "alarms": row.alarms_total,
            "inhibited": row.inhibited_total, "last_alarm_unix_s": row.last_alarm_s}


def _finite(value: Any) -> Any:
    """The view with NaN and infinities as null: JSON has no number for them."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value
