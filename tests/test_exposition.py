"""The fast exposition path must equal client_python's output byte for byte, in both formats."""

import math

import pytest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.exposition import generate_latest
from prometheus_client.openmetrics.exposition import CONTENT_TYPE_LATEST as OPENMETRICS_CONTENT_TYPE
from prometheus_client.openmetrics.exposition import generate_latest as om_generate_latest

from samples import sample
from virt_exporter.collectors import base, load_all
from virt_exporter.collectors.families import counter, gauge, info
from virt_exporter.exposition import negotiate, render
from virt_exporter.sample import DomainStats
from virt_exporter.source.domxml import parse_domain_xml


class _Registry:
    def __init__(self, metrics):
        self.metrics = list(metrics)

    def collect(self):
        return self.metrics


TRICKY_LABELS = ["plain", 'quo"te', "back\\slash", "new\nline", "ünïcødé", "", "{braces},comma=eq"]
TRICKY_VALUES = [0, 1, -1, 0.5, 1e-9, 123456, 1234567, 12345678.9, 1073741824, 2 ** 53, 1e21, -1e21,
                 float("inf"), float("-inf"), float("nan"), 3.14159265358979, 5e-324, 10 ** 15 + 0.5]


def _pairs():
    """The same content as fast families and as client_python's own families."""
    fast, ref = [], []
    g, rg = gauge("t_gauge", "A gauge.\nWith \\ and \"quotes\".", ["domain", "b_label"]), \
        GaugeMetricFamily("t_gauge", "A gauge.\nWith \\ and \"quotes\".", labels=["domain", "b_label"])
    c = counter("t_things_total", "Counter.", ["z", "a"])
    rc = CounterMetricFamily("t_things", "Counter.", labels=["z", "a"])
    i, ri = info("t_thing_info", "Info.", ["x", "domain"]), InfoMetricFamily("t_thing", "Info.", labels=["x", "domain"])
    for n, v in enumerate(TRICKY_VALUES):
        lab = TRICKY_LABELS[n % len(TRICKY_LABELS)]
        g.add_metric([lab, str(n)], v)
        rg.add_metric([lab, str(n)], v)
        c.add_metric([str(n), lab], abs(v) if not math.isnan(v) else v)
        rc.add_metric([str(n), lab], abs(v) if not math.isnan(v) else v)
    for lab in TRICKY_LABELS:
        i.add_metric([lab, "d"], {})
        ri.add_metric([lab, "d"], {})
    # A family whose rows omit a trailing label (block layers: the top one has no backing_index).
    p, rp = gauge("t_layers", "Layers.", ["domain", "target", "backing_index"]), \
        GaugeMetricFamily("t_layers", "Layers.", labels=["domain", "target", "backing_index"])
    for labels in (["d", "vda"], ["d", "vda", "2"], ["d", "vdb"]):
        p.add_metric(labels, 7)
        rp.add_metric(labels, 7)
    e, re_ = gauge("t_empty", "No samples.", []), GaugeMetricFamily("t_empty", "No samples.", labels=[])
    u, ru = gauge("t_nolabels", "No labels.", []), GaugeMetricFamily("t_nolabels", "No labels.", labels=[])
    u.add_metric([], 42)
    ru.add_metric([], 42)
    fast += [g, c, i, p, e, u]
    ref += [rg, rc, ri, rp, re_, ru]
    return fast, ref


@pytest.mark.parametrize("openmetrics", [False, True])
def test_fast_families_equal_client_python_families(openmetrics):
    fast, ref = _pairs()
    encoder = om_generate_latest if openmetrics else generate_latest
    assert render(fast, openmetrics) == encoder(_Registry(ref))


@pytest.mark.parametrize("openmetrics", [False, True])
def test_values_print_as_client_pythons_float_to_go_string(openmetrics):
    """The fast path's inlined float formatting, through render(), on the values near its shortcuts."""
    values = TRICKY_VALUES + [v * s for v in (1.5, 999999.5, 1e6, 1e7, 123456789012) for s in (1, -1)]
    g, rg = gauge("t_values", "Values.", ["n"]), GaugeMetricFamily("t_values", "Values.", labels=["n"])
    for n, v in enumerate(values):
        g.add_metric([str(n)], v)
        rg.add_metric([str(n)], v)
    encoder = om_generate_latest if openmetrics else generate_latest
    assert render([g], openmetrics) == encoder(_Registry([rg]))


def _sample():
    xml = """<domain type='kvm'><name>vm"1</name><uuid>11111111-2222-3333-4444-555555555555</uuid>
      <memory unit='KiB'>65536</memory><vcpu>2</vcpu><os><type arch='x86_64' machine='pc'>hvm</type></os>
      <devices><disk type='file' device='disk'><driver name='qemu' type='qcow2'/>
      <source file='/img/a b.qcow2'/><target dev='vda' bus='virtio'/></disk>
      <interface type='ethernet'><mac address='52:54:00:00:00:01'/><target dev='tap0'/>
      <model type='virtio'/></interface></devices></domain>"""
    stats = {"state.state": 1, "state.reason": 1, "cpu.time": 123456789, "cpu.user": 1000, "cpu.system": 2000,
             "balloon.current": 65536, "balloon.maximum": 65536, "balloon.rss": 40000,
             "vcpu.current": 2, "vcpu.maximum": 2, "vcpu.0.state": 1, "vcpu.0.time": 5000000000,
             "vcpu.0.wait": 0, "vcpu.0.delay": 7, "vcpu.1.state": 1, "vcpu.1.time": 6, "vcpu.1.delay": 8,
             "net.count": 1, "net.0.name": "tap0", "net.0.rx.bytes": 10, "net.0.rx.pkts": 1, "net.0.rx.errs": 0,
             "net.0.rx.drop": 0, "net.0.tx.bytes": 20, "net.0.tx.pkts": 2, "net.0.tx.errs": 0, "net.0.tx.drop": 0,
             "block.count": 2, "block.0.name": "vda", "block.0.path": "/img/a b.qcow2", "block.0.backingIndex": 1,
             "block.0.rd.reqs": 1, "block.0.rd.bytes": 512, "block.0.rd.times": 1000, "block.0.wr.reqs": 0,
             "block.0.wr.bytes": 0, "block.0.wr.times": 0, "block.0.fl.reqs": 0, "block.0.fl.times": 0,
             "block.0.allocation": 0, "block.0.capacity": 1073741824, "block.0.physical": 200704,
             "block.1.name": "vda", "block.1.path": "/img/base.qcow2", "block.1.backingIndex": 2,
             "block.1.allocation": 0, "block.1.capacity": 1073741824, "block.1.physical": 1234567}
    uuid = "11111111-2222-3333-4444-555555555555"
    dom = DomainStats(uuid=uuid, name='vm"1', stats=stats)
    return sample(1.0, [dom]), {uuid: parse_domain_xml(xml)}


@pytest.mark.parametrize("openmetrics", [False, True])
def test_collector_output_equals_client_python_encoding(openmetrics):
    load_all()
    sample, infos = _sample()
    families = []
    for spec in base.REGISTRY.values():
        if spec.name in ("domain", "cpu", "vcpu", "memory", "block", "interface"):
            families.extend(spec.collect(base.ScrapeContext(current=sample, previous=None, domain_info=infos)))
    assert sum(len(f.rows) for f in families) > 40
    encoder = om_generate_latest if openmetrics else generate_latest
    assert render(families, openmetrics) == encoder(_Registry(families))


def test_negotiation_matches_client_python_content_types():
    _encode, ctype = negotiate(None)
    assert ctype.startswith("text/plain; version=0.0.4")
    _encode, ctype = negotiate("application/openmetrics-text;version=1.0.0,text/plain;q=0.5")
    # the installed client_python's: 1.0.0 from 0.17 on, 0.0.1 in 0.16 (Debian 12)
    assert ctype.split(";")[:2] == OPENMETRICS_CONTENT_TYPE.split(";")[:2]
    assert ctype.startswith("application/openmetrics-text; version=")
    body = _encode([])
    assert b"".join(body) == b"# EOF\n"
