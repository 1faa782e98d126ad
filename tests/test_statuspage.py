"""statuspage: the typed view built from a scrape context (with a given clock), the page and JSON
rendered from it — escaping, the script the CSP allows, nothing loaded from elsewhere."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import html
import json
import re

from samples import cpu_sample, domain
from virt_exporter import statuspage
from virt_exporter.collectors.base import ScrapeContext
from virt_exporter.perfmon.engine import EngineSnapshot, VariableRow
from virt_exporter.sample import DomainPlacement, HostFacts, HostMemory, NumaSnapshot

NASTY = "vm\"><img src=x onerror=\"alert(1)\"><script>alert(2)</script>&amp;"
GENERATED_UNIX_S = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC
HEALTH = statuspage.Health(sample_age_s=0.5, bulk_stats_s=0.01, unresponsive=0, collector_errors={"cpu": 0},
                           reconnects=0)


def _context(cell_cpus=None, numa=None, pids=None):
    facts = HostFacts(hostname="<b>host</b>", libvirt_version="9.0.0", hypervisor_version="7.2.0",
                      cpu_model="x86_64", cell_cpus={0: [0, 1]} if cell_cpus is None else cell_cpus)
    # current apart from maximum (vCPUs and memory): the page shows what is online and assigned now
    vcpu = {"vcpu.current": 1, "vcpu.maximum": 2, "balloon.current": 65536, "balloon.maximum": 131072,
            "balloon.rss": 32768}
    prev = cpu_sample(10.0, [domain("u1", 0, name=NASTY, **vcpu, **{"vcpu.0.delay": 0}),
                             domain("u2", 0, name="paused-vm", state=3, **{"state.reason": 5})], busy=0, total=0)
    cur = cpu_sample(12.0, [domain("u1", 1_000_000_000, name=NASTY, **vcpu, **{"vcpu.0.delay": 200_000_000}),
                            domain("u2", 0, name="paused-vm", state=3, **{"state.reason": 5})], busy=200, total=400,
                     pids=pids)
    cur = dataclasses.replace(cur, host=facts, host_memory=HostMemory(4 << 20, 1 << 20),
                              cell_memory={0: HostMemory(4 << 20, 1 << 20)})
    return ScrapeContext(current=cur, previous=prev, domain_info={}, numa=numa)


def _view(ctx=None):
    return statuspage.build_view(ctx or _context(), {}, HEALTH, clock=lambda: GENERATED_UNIX_S)


def _numa(pid, node_cpus=None):
    """A NUMA reading of u1 (QEMU ``pid``): 8 KiB on node 1, none on node 0, its vCPU last on CPU 3."""
    placement = DomainPlacement(uuid="u1", name=NASTY, pid=pid, memory_bytes_by_node={0: 0, 1: 8192},
                                vcpu_cpus={0: 3}, read_monotonic_s=11.0, duration_s=0.01)
    return NumaSnapshot(domains={"u1": placement}, node_cpus=node_cpus or {0: [0, 1], 1: [2, 3]}, readable=True,
                        reason="", refresh_duration_s=0.01)


def test_view_holds_mhz_steal_state_and_memory():
    view = _view()
    vms = {d.name: d for d in view.domains}
    assert vms[NASTY].mhz == 1000.0  # core 2000 MHz × 1 s of CPU in 2 s
    assert vms[NASTY].steal == 0.1    # 0.2 s of run-queue wait in 2 s, one vCPU
    assert vms[NASTY].memory_current_bytes == 64 << 20 and vms[NASTY].vcpus == 1
    assert (vms["paused-vm"].state, vms["paused-vm"].reason) == ("paused", "I/O error")
    assert vms["paused-vm"].steal is None  # not running: no run queue to wait in
    assert view.host.cpu.capacity_mhz == 4000 and view.host.cpu.busy_mhz == 2000
    assert view.host.cells == (statuspage.CellRow(cell=0, cpus=2, total_bytes=4 << 30, free_bytes=1 << 30),)
    assert view.generated_unix_s == GENERATED_UNIX_S
    assert "2023-11-14 22:13:20 UTC" in statuspage.render_html(view).decode()


def test_numa_cells_come_from_the_reading_of_the_running_qemu():
    # The topology has no cells: the reader's node CPUs stand in (CPU 3 is in cell 1).
    view = _view(_context(cell_cpus={}, numa=_numa(4242), pids={"u1": 4242}))
    vm = {d.name: d for d in view.domains}[NASTY]
    assert (vm.numa_memory_cells, vm.numa_vcpu_cells) == ((1,), (1,))
    assert [(c.cell, c.cpus) for c in view.host.cells] == [(0, 2), (1, 2)]
    # The topology, where libvirt gives one, wins: one cell holding every CPU.
    view = _view(_context(cell_cpus={0: [0, 1, 2, 3]}, numa=_numa(4242), pids={"u1": 4242}))
    assert {d.name: d for d in view.domains}[NASTY].numa_vcpu_cells == (0,)
    assert [(c.cell, c.cpus) for c in view.host.cells] == [(0, 4)]
    # Read from a QEMU that has since been replaced: no cells shown.
    vm = {d.name: d for d in _view(_context(numa=_numa(4242), pids={"u1": 5555})).domains}[NASTY]
    assert (vm.numa_memory_cells, vm.numa_vcpu_cells) == ((), ())


def _variable(uuid, domain, variable, alarms, last_alarm_s):
    return VariableRow(object_type="vm" if uuid else "host", uuid=uuid, domain=domain, variable=variable,
                       priority="3", value=0.5, level=0.9, countdown_s=60.0, alarms_total=alarms,
                       inhibited_total=0, last_alarm_s=last_alarm_s)


def test_perfmon_variables_show_per_vm_and_alarms_most_recent_first_of_exported_domains():
    rows = (_variable("u1", NASTY, "cpu_usage", 1, 100.0), _variable("", "", "host_cpu", 2, 300.0),
            _variable("u9", "hidden", "cpu_usage", 5, 500.0), _variable("u1", NASTY, "memory", 0, None))
    perfmon = EngineSnapshot(rows=rows, config_errors=0, config_rejections_total=0, steps_total=3,
                             step_failures_total=0, last_step_s=None, step_s=60)
    ctx = dataclasses.replace(_context(), perfmon=perfmon, keeps_domain=lambda name: name != "hidden")
    view = _view(ctx)
    assert [v.variable for v in {d.uuid: d for d in view.domains}["u1"].perfmon] == ["cpu_usage", "memory"]
    assert [(a.domain, a.variable) for a in view.alarms] == [("", "host_cpu"), (NASTY, "cpu_usage")]
    page = statuspage.render_html(view).decode()
    assert "1970-01-01 00:05:00 UTC" in page and "1970-01-01 00:08:20 UTC" not in page
    # The JSON keeps the perfmon keys it has always published, not the engine's field names.
    data = json.loads(statuspage.render_json(view))
    assert data["alarms"][0] == {"object": "host", "domain": "", "variable": "host_cpu", "priority": "3",
                                 "value": 0.5, "level": 0.9, "countdown_s": 60.0, "alarms": 2, "inhibited": 0,
                                 "last_alarm_unix_s": 300.0}
    assert [v["last_alarm_unix_s"] for v in {d["uuid"]: d for d in data["domains"]}["u1"]["perfmon"]] == [100.0, None]


def test_every_string_is_escaped_and_json_round_trips():
    view = _view()
    page = statuspage.render_html(view).decode()
    assert "<img" not in page and "<script>alert" not in page and "<b>host" not in page
    assert html_escaped(NASTY) in page
    data = json.loads(statuspage.render_json(view))
    assert {d["uuid"]: d["name"] for d in data["domains"]}["u1"] == NASTY
    # the JSON's keys, as its readers (the migration test, scripts) know them
    assert sorted(data) == ["alarms", "domains", "generated_unix_s", "health", "host", "jobs", "version"]
    assert sorted(data["domains"][0]) == ["disks", "memory_current_bytes", "memory_rss_bytes", "mhz", "name",
                                          "numa_memory_cells", "numa_vcpu_cells", "perfmon", "reason", "state",
                                          "steal", "unresponsive", "uuid", "vcpus"]
    assert data["host"]["cells"] == [{"cell": 0, "cpus": 2, "total_bytes": 4 << 30, "free_bytes": 1 << 30}]
    assert data["health"] == dataclasses.asdict(HEALTH)


def html_escaped(text: str) -> str:
    return html.escape(text, quote=True)


def test_the_policy_allows_exactly_the_pages_script_and_nothing_from_elsewhere():
    page = statuspage.render_html(_view()).decode()
    scripts = re.findall(r"<script>(.*?)</script>", page, re.S)
    assert scripts == [statuspage.SCRIPT]
    digest = base64.b64encode(hashlib.sha256(scripts[0].encode()).digest()).decode()
    assert "'sha256-%s'" % digest in statuspage.CONTENT_SECURITY_POLICY
    assert not re.search(r"(src|href)=\"(https?:)?//", page)  # no external asset


def test_non_finite_numbers_are_null_in_json():
    view = _view()
    domains = tuple(dataclasses.replace(d, mhz=float("nan"), steal=float("inf")) if d.uuid == "u1" else d
                    for d in view.domains)
    data = {d["uuid"]: d for d in json.loads(statuspage.render_json(dataclasses.replace(view, domains=domains)))
            ["domains"]}
    assert (data["u1"]["mhz"], data["u1"]["steal"], data["u1"]["name"]) == (None, None, NASTY)
    assert data["u2"]["state"] == "paused"
