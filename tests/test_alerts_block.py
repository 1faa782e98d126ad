"""alerts/block.rules.yml: promtool check + the promtool unit tests, and that every exporter metric the
rules read is one the collectors really emit (with the labels the rules select on)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from promtool import promtool
from samples import sample
from virt_exporter.collectors import block, domain, watermark
from virt_exporter.collectors.base import ScrapeContext
from virt_exporter.sample import DomainStats
from virt_exporter.source.block_events import BlockEvents
from virt_exporter.source.domxml import parse_domain_xml

REPO = Path(__file__).resolve().parents[1]
RULES = REPO / "alerts/block.rules.yml"
RULE_TESTS = REPO / "alerts/tests/block.test.yml"
UUID = "11111111-2222-3333-4444-555555555555"


@pytest.mark.prometheus
def test_promtool_check_rules():
    assert "SUCCESS: 7 rules found" in promtool("check", "rules", RULES).stdout


@pytest.mark.prometheus
def test_promtool_unit_tests():
    promtool("test", "rules", RULE_TESTS)


def test_every_alert_is_unit_tested_firing():
    alerts = {r["alert"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"] if "alert" in r}
    fired = set()
    for t in yaml.safe_load(RULE_TESTS.read_text())["tests"]:
        for case in t.get("alert_rule_test", []):
            if case.get("exp_alerts"):
                fired.add(case["alertname"])
    assert alerts == fired


class _Dom:
    def UUIDString(self):
        return UUID

    def name(self):
        return "vm1"



def _emitted() -> dict:
    """{metric name: set of label-name sets} from the block, domain and watermark collectors."""
    xml = f"""<domain type='kvm'><name>vm1</name><uuid>{UUID}</uuid><memory>65536</memory><vcpu>1</vcpu>
      <os><type arch='x86_64' machine='pc'>hvm</type></os><devices>
        <disk type='block' device='disk'><driver name='qemu' type='qcow2'/><source dev='/dev/loop7'/>
          <target dev='vda' bus='virtio'/></disk></devices></domain>"""
    stats = {"state.state": 3, "state.reason": 5, "block.count": 2,
             "block.0.name": "vda", "block.0.path": "/dev/loop7", "block.0.backingIndex": 1,
             "block.0.allocation": 5, "block.0.capacity": 10, "block.0.physical": 8,
             "block.0.rd.reqs": 1, "block.0.rd.bytes": 512, "block.0.rd.times": 1, "block.0.wr.reqs": 1,
             "block.0.wr.bytes": 512, "block.0.wr.times": 1, "block.0.fl.reqs": 0, "block.0.fl.times": 0,
             "block.1.name": "vda", "block.1.path": "/dev/loop6", "block.1.backingIndex": 2,
             "block.1.allocation": 0, "block.1.capacity": 10, "block.1.physical": 8}
    current = sample(domains=[DomainStats(UUID, "vm1", stats)])
    events = BlockEvents(None, None, arm_thresholds=False)
    events.on_io_error(None, _Dom(), "/dev/loop7", "virtio-disk0", 1, "enospc")
    ctx = ScrapeContext(current=current, previous=None, domain_info={UUID: parse_domain_xml(xml)},
                        block_events=events.snapshot())
    out: dict = {}
    for mod in (block, domain, watermark):
        for fam in mod.collect(ctx):
            for s in fam.samples:
                out.setdefault(s.name, set()).add(frozenset(s.labels))
    return out


def test_rules_read_only_metrics_the_exporter_emits():
    exprs = " ".join(r["expr"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"])
    # libvirt_up is the exporter's own (the thresholds' host list), checked in test_alerts_rules
    used = set(re.findall(r"(?<![:\w])libvirt_[a-z_]+(?![:\w])", exprs)) - {"libvirt_up"}
    emitted = _emitted()
    assert used, "the rules read no exporter metric"
    assert used <= set(emitted), used - set(emitted)
    # selectors name labels the series have (backing_index="" means "absent": the top layer)
    for name, matchers in re.findall(r"(libvirt_[a-z_]+)\{([^}]*)\}", exprs):
        for label in re.findall(r"([a-z_]+)!?=~?\"[^\"]+\"", matchers):
            if label != "job":  # Prometheus's, from the scrape
                assert any(label in labels for labels in emitted[name]), (name, label)
