"""statuspage: the view built from a sample (pure), the page and JSON rendered from it — escaping,
the script the CSP allows, nothing loaded from elsewhere."""

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
from virt_exporter.sample import HostFacts, HostMemory

NASTY = "vm\"><img src=x onerror=\"alert(1)\"><script>alert(2)</script>&amp;"


def _view():
    facts = HostFacts(hostname="<b>host</b>", libvirt_version="9.0.0", hypervisor_version="7.2.0",
                      cpu_model="x86_64", cell_cpus={0: [0, 1]})
    vcpu = {"vcpu.current": 1, "vcpu.maximum": 1, "balloon.current": 65536, "balloon.rss": 32768}
    prev = cpu_sample(10.0, [domain("u1", 0, name=NASTY, **vcpu, **{"vcpu.0.delay": 0}),
                             domain("u2", 0, name="paused-vm", state=3, **{"state.reason": 5})], busy=0, total=0)
    cur = cpu_sample(12.0, [domain("u1", 1_000_000_000, name=NASTY, **vcpu, **{"vcpu.0.delay": 200_000_000}),
                            domain("u2", 0, name="paused-vm", state=3, **{"state.reason": 5})], busy=200, total=400)
    cur = dataclasses.replace(cur, host=facts, host_memory=HostMemory(4 << 20, 1 << 20),
                              cell_memory={0: HostMemory(4 << 20, 1 << 20)})
    ctx = ScrapeContext(current=cur, previous=prev, domain_info={})
    return statuspage.build_view(ctx, {}, {"sample_age_s": 0.5, "bulk_stats_s": 0.01, "unresponsive": 0,
                                           "collector_errors": {"cpu": 0}, "reconnects": 0})


def test_view_holds_mhz_steal_state_and_memory():
    view = _view()
    vms = {d["name"]: d for d in view["domains"]}
    assert vms[NASTY]["mhz"] == 1000.0  # core 2000 MHz × 1 s of CPU in 2 s
    assert vms[NASTY]["steal"] == 0.1    # 0.2 s of run-queue wait in 2 s, one vCPU
    assert vms[NASTY]["memory_current_bytes"] == 64 << 20
    assert (vms["paused-vm"]["state"], vms["paused-vm"]["reason"]) == ("paused", "I/O error")
    assert view["host"]["cpu"]["capacity_mhz"] == 4000 and view["host"]["cpu"]["busy_mhz"] == 2000
    assert view["host"]["cells"] == [{"cell": 0, "cpus": 2, "total_bytes": 4 << 30, "free_bytes": 1 << 30}]


def test_every_string_is_escaped_and_json_round_trips():
    view = _view()
    page = statuspage.render_html(view).decode()
    assert "<img" not in page and "<script>alert" not in page and "<b>host" not in page
    assert html_escaped(NASTY) in page
    assert {d["uuid"]: d["name"] for d in json.loads(statuspage.render_json(view))["domains"]}["u1"] == NASTY


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
    assert json.loads(statuspage.render_json({"a": float("nan"), "b": [float("inf"), 1.5]})) == {"a": None,
                                                                                                   "b": [None, 1.5]}
