"""Hostile and broken configs: random XML, truncated documents, huge values, entity expansion and
external entities. The parser returns a config or raises PerfmonConfigError, quickly; the engine fed
such metadata keeps stepping and counts the rejections."""

import random
import time

import pytest

from samples import sample
from virt_exporter.perfmon.config import PerfmonConfigError, parse_object_config, parse_perfmon_file
from virt_exporter.perfmon.engine import PerfmonEngine
from virt_exporter.sample import DomainStats

from .harness import FakeDomainInfo, file_config

VALID = ('<config><variable><name value="cpu_usage"/><alarm_trigger_level value="0.5"/>'
         '<alarm_trigger_period value="10"/><alarm_auto_inhibit_period value="60"/>'
         '<rrd_regex value="cpu[0-9]+"/><consolidation_fn value="average"/><alarm_priority value="3"/>'
         '<alarm_trigger_sense value="high"/></variable><variable><name value="fs_usage"/></variable></config>')

TAGS = ["config", "variable", "name", "alarm_trigger_level", "alarm_trigger_sense", "alarm_trigger_period",
        "alarm_auto_inhibit_period", "alarm_priority", "consolidation_fn", "rrd_regex", "x"]
VALUES = ["", "0", "-1", "0.5", "1e308", "1e999", "nan", "inf", "-inf", "9" * 5000, "cpu[", "(a+)+$", "a" * 100000,
          "sum", "average", "max", "get_percent_fs_usage", "eval", "high", "low", "\u00e9\u4e2d", "&amp;", "&lt;x",
          "60", " 60 ", "1_000", "0x10", "  ", "'\"", "\x01"]


def random_xml(rng, depth=0):
    tag = rng.choice(TAGS)
    attrs = ""
    if rng.random() < 0.7:
        value = rng.choice(VALUES).replace("&", "&amp;" if rng.random() < 0.5 else "&").replace('"', "&quot;")
        attrs = ' value="%s"' % value
    if depth > 4 or rng.random() < 0.4:
        return "<%s%s/>" % (tag, attrs)
    children = "".join(random_xml(rng, depth + 1) for _ in range(rng.randint(0, 4)))
    return "<%s%s>%s</%s>" % (tag, attrs, children, tag)


def parse_bounded(doc, object_type="vm"):
    """Parse; assert it either works or raises PerfmonConfigError with one line, within 1 s."""
    t0 = time.monotonic()
    try:
        cfg = parse_object_config(doc, object_type)
        outcome = cfg
    except PerfmonConfigError as e:
        assert "\n" not in str(e) and len(str(e)) < 400, str(e)[:500]
        outcome = e
    assert time.monotonic() - t0 < 1.0
    return outcome


def test_random_documents_never_crash_or_hang():
    rng = random.Random(7)
    accepted = 0
    for _ in range(3000):
        doc = "<config>%s</config>" % "".join(random_xml(rng) for _ in range(rng.randint(0, 3)))
        if not isinstance(parse_bounded(doc, rng.choice(["vm", "host"])), PerfmonConfigError):
            accepted += 1
    assert accepted > 50  # some random documents are valid, or the generator tests little


def test_every_truncation_of_a_valid_document_is_handled():
    assert not isinstance(parse_bounded(VALID), PerfmonConfigError)
    for cut in range(len(VALID)):
        parse_bounded(VALID[:cut])
        parse_bounded(VALID[cut:])


def test_random_bytes_and_mutations_are_handled():
    rng = random.Random(11)
    data = VALID.encode()
    for _ in range(2000):
        b = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            b[rng.randrange(len(b))] = rng.randrange(256)
        parse_bounded(bytes(b))
    for _ in range(300):
        parse_bounded(bytes(rng.randrange(256) for _ in range(rng.randint(0, 300))))


@pytest.mark.parametrize("value,message", [
    ("9" * 5000, "is not a number"),
    ("1e999", None),  # float() makes it inf: accepted with a warning, as perfmon's float() takes it
    ("1" * 13, None),  # a 13-digit period is refused below
])
def test_huge_values(value, message):
    if message:
        with pytest.raises(PerfmonConfigError, match=message):
            parse_object_config('<config><variable><name value="cpu_usage"/><alarm_trigger_level value="%s"/>'
                                '</variable></config>' % value, "vm")
    with pytest.raises(PerfmonConfigError, match="alarm_trigger_period"):
        parse_object_config('<config><variable><name value="cpu_usage"/><alarm_trigger_level value="1"/>'
                            '<alarm_trigger_period value="%s"/></variable></config>' % value, "vm")


def test_oversized_documents_and_regexes_are_refused():
    with pytest.raises(PerfmonConfigError, match="more than 65536"):
        parse_object_config("<config>" + " " * 70000 + "</config>", "vm")
    with pytest.raises(PerfmonConfigError, match="rrd_regex is longer than 512"):
        parse_object_config('<config><variable><name value="x"/><rrd_regex value="%s"/>'
                            '<alarm_trigger_level value="1"/></variable></config>' % ("a" * 600), "vm")
    deep = "<config>" + "<x>" * 5000 + "</x>" * 5000 + "</config>"
    parse_bounded(deep)


def test_entity_expansion_is_refused_quickly():
    laughs = ('<?xml version="1.0"?><!DOCTYPE config [<!ENTITY a "aaaaaaaaaa">'
              + "".join('<!ENTITY %s "%s">' % (chr(98 + i), ("&%s;" % chr(97 + i)) * 10) for i in range(9))
              + ']><config><variable><name value="&j;"/></variable></config>')
    err = parse_bounded(laughs)
    assert isinstance(err, PerfmonConfigError) and "DOCTYPE" in str(err)


def test_external_entities_are_not_resolved(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("s3cr3t")
    for system in (secret.as_uri(), "http://127.0.0.1:9/x"):
        doc = ('<!DOCTYPE config [<!ENTITY e SYSTEM "%s">]><config><variable><name value="cpu_usage"/>'
               '<alarm_trigger_level value="1"/><x>&e;</x></variable></config>' % system)
        err = parse_bounded(doc)
        assert isinstance(err, PerfmonConfigError) and "s3cr3t" not in str(err)
    with pytest.raises(PerfmonConfigError, match="DOCTYPE"):
        parse_perfmon_file('<!DOCTYPE perfmon SYSTEM "%s"><perfmon/>' % secret.as_uri(), "F")


def test_engine_survives_fuzzed_metadata_and_counts_rejections():
    rng = random.Random(3)
    uuid = "00000000-0000-4000-8000-0000000000ff"
    info = {uuid: FakeDomainInfo(uuid, "fuzz", VALID)}
    engine = PerfmonEngine(lambda: None, lambda: info, file_config(), 5, fs_fraction=lambda: 0.5)
    docs = [VALID[:rng.randrange(len(VALID))] for _ in range(100)] + [
        "<config>%s</config>" % random_xml(rng) for _ in range(200)]
    t0 = time.monotonic()
    for k, doc in enumerate(docs):
        info[uuid] = FakeDomainInfo(uuid, "fuzz", doc)
        stats = {"state.state": 1, "vcpu.current": 1, "vcpu.maximum": 1, "vcpu.0.time": k * 5 * 10 ** 9}
        engine.step(sample(5.0 * k, [DomainStats(uuid, "fuzz", stats)], wall_time_s=1e9 + 5 * k))
    snap = engine.snapshot()
    assert snap.steps_total == len(docs) and snap.config_rejections_total > 100
    assert time.monotonic() - t0 < 20
