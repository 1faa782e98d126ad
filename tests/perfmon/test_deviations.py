"""Where the engine and perfmon differ on purpose (docs/perfmon.md, "Where this engine differs from
perfmon"): each deviation is run on both the engine and the transliterated seed (seed_model.py), and
the test shows the difference is exactly the documented one and nothing more. Also the input side:
for randomly assembled variables the engine accepts exactly what the seed accepts and reads the same
settings from it, apart from the documented cases."""

from __future__ import annotations

import math
import random
from fractions import Fraction
from typing import Tuple

import pytest

from virt_exporter.perfmon.config import (
    HOST_DEFAULT_REGEX,
    VM_DEFAULT_REGEX,
    PerfmonConfigError,
    parse_object_config,
)
from virt_exporter.perfmon.datasources import DataSources
from virt_exporter.perfmon.engine import ObjectMonitor as EngineMonitor

from .harness import DOMAIN, T0_S, UUID, FakeDomainInfo, Pair, SeedVM, config_xml
from .seed_model import HOSTMonitor, Perfmon, VMMonitor, rrd_updates

STEP_S = 60
BAD = {"cpu0": 0.9, "cpu1": 0.9}
ALWAYS_BAD = {"name": "cpu_usage", "rrd_regex": "cpu[0-9]+", "consolidation_fn": "average",
              "alarm_trigger_level": "0.5", "alarm_trigger_period": "60", "alarm_auto_inhibit_period": "60"}


def engine_monitor(xml: str) -> EngineMonitor:
    monitor = EngineMonitor("vm", "u", "vm1")
    monitor.apply(parse_object_config(xml, "vm"), T0_S)
    return monitor


def test_per_step_alarms_where_perfmon_batches_five_minutes_under_one_clock():
    """perfmon reads rrd_updates every 300 s and runs every row of the batch with one time.time():
    with an inhibit period under the batch, it sends one alarm per batch and inhibits the rest. The
    engine steps every rrd_step with each step's own time: an alarm per inhibit period. Run one row at
    a time, at each row's own time, the seed does what the engine does."""
    monitor = engine_monitor(config_xml([ALWAYS_BAD]))
    engine = [e for k in range(1, 6) for e in monitor.step(DataSources(BAD), T0_S + k * STEP_S, STEP_S, lambda: None)]
    batched = SeedVM(STEP_S, config_xml([ALWAYS_BAD]))
    batched.run(T0_S + 5 * STEP_S, *[BAD] * 5)  # one batch of five rows, one time.time()
    per_row = SeedVM(STEP_S, config_xml([ALWAYS_BAD]))
    for k in range(1, 6):
        per_row.run(T0_S + k * STEP_S, BAD)
    assert [(e.time_s, e.sent) for e in engine] == [(T0_S + k * STEP_S, True) for k in range(1, 6)]
    assert [(t, sent) for t, _n, _v, sent in per_row.alarms()] == [(e.time_s, e.sent) for e in engine]
    assert [(t, sent) for t, _n, _v, sent in batched.alarms()] == [(T0_S + 5 * STEP_S, True)] + [
        (T0_S + 5 * STEP_S, False)] * 4


def test_a_reformatted_config_keeps_its_state_where_perfmon_starts_afresh():
    """perfmon resets a variable when vc1.xmldoc.toxml() != vc2.xmldoc.toxml(): white space inside a
    <variable> counts. The engine compares tags and values, so re-indenting a config keeps the
    countdown; given the same text again, the seed keeps it too."""
    compact = config_xml([dict(ALWAYS_BAD, alarm_trigger_period="120")])
    spaced = compact.replace("><", ">\n  <")
    monitor = engine_monitor(compact)
    first = monitor.step(DataSources(BAD), T0_S + STEP_S, STEP_S, lambda: None)
    monitor.apply(parse_object_config(spaced, "vm"), T0_S + STEP_S)
    second = monitor.step(DataSources(BAD), T0_S + 2 * STEP_S, STEP_S, lambda: None)
    assert first == [] and [e.sent for e in second] == [True]  # the countdown went on

    def seed_with(second_text):
        seed = SeedVM(STEP_S, compact)
        seed.run(T0_S + STEP_S, BAD)
        seed.perfmon.other_config[seed.uuid] = second_text
        seed.perfmon.refresh()
        seed.run(T0_S + 2 * STEP_S, BAD)
        return [(t, sent) for t, _n, _v, sent in seed.alarms()]

    assert seed_with(spaced) == []  # perfmon started afresh at the reformatted config: no alarm yet
    assert seed_with(compact) == [(e.time_s, e.sent) for e in second]


def test_a_rejected_document_keeps_the_last_valid_config_where_perfmon_keeps_a_part():
    """A document with a bad variable: perfmon has already applied the variables before it (a changed
    one restarted) and never gets to removing those the document no longer names; the engine rejects
    the whole document and keeps the config in force. The engine equals the seed shown the last valid
    document; the seed shown the bad one equals the seed shown just the part perfmon applied."""
    cpu = dict(ALWAYS_BAD, alarm_trigger_period="120", alarm_auto_inhibit_period="0")
    net = {"name": "net", "rrd_regex": "vif_0_rx", "alarm_trigger_level": "100", "alarm_trigger_period": "60",
           "alarm_auto_inhibit_period": "0"}
    good = config_xml([cpu, net])
    cpu_changed = dict(cpu, alarm_trigger_period="60")
    bad = config_xml([cpu_changed, {"name": "broken", "rrd_regex": "cpu[", "alarm_trigger_level": "1"}])
    applied_part = config_xml([cpu_changed, net])  # net is named no more, but is not removed
    values = {"cpu0": 0.75, "cpu1": 0.75, "vif_0_rx": 200}

    def pair(seed_xml):
        p = Pair(STEP_S, vm_xml=good)
        p.step(values)
        p.set_vm_xml(bad, seed_xml=seed_xml)
        for _ in range(3):
            p.step(values)
        return p

    shown_last_valid = pair(good)
    assert shown_last_valid.engine_alarms() == shown_last_valid.model_alarms()
    assert [(t - T0_S, n) for t, _o, _u, n, *_ in shown_last_valid.engine_alarms()] == [
        (60, "net"), (120, "cpu_usage"), (120, "net"), (180, "net"), (240, "cpu_usage"), (240, "net")]
    as_perfmon, part = pair(None), pair(applied_part)
    assert as_perfmon.model_alarms() == part.model_alarms() != shown_last_valid.model_alarms()
    assert any("regex cpu[ does not compile" in e for e in as_perfmon.perfmon.errors)
    assert [(t - T0_S, n) for t, _o, _u, n, *_ in as_perfmon.model_alarms()] == [
        (60, "net"), (120, "cpu_usage"), (120, "net"), (180, "cpu_usage"), (180, "net"),
        (240, "cpu_usage"), (240, "net")]


@pytest.mark.parametrize("fn,crash", [("average", ZeroDivisionError), ("max", ValueError)])
def test_average_or_max_over_no_source_skips_the_variable_where_perfmon_ends(fn, crash):
    """perfmon's average([]) / max([]) raises out of process_rrd_updates and out of its main loop:
    the daemon exits and no object is monitored any more. The engine skips that variable for the step
    and steps the others: its alarms are exactly the seed's without that variable."""
    empty = {"name": "none", "rrd_regex": "nothing", "consolidation_fn": fn, "alarm_trigger_level": "1",
             "alarm_trigger_sense": "low", "alarm_trigger_period": "60", "alarm_auto_inhibit_period": "0"}
    cpu = dict(ALWAYS_BAD, alarm_auto_inhibit_period="0")
    seed = SeedVM(STEP_S, config_xml([empty, cpu]))
    with pytest.raises(crash):
        seed.run(T0_S + STEP_S, BAD)
    assert seed.alarms() == []
    p = Pair(STEP_S, vm_xml=config_xml([empty, cpu]))
    p.set_vm_xml(config_xml([empty, cpu]), seed_xml=config_xml([cpu]))
    for _ in range(3):
        p.step(BAD)
    assert p.engine_alarms() == p.model_alarms() and len(p.engine_alarms()) == 3
    (row,) = [r for r in p.engine.snapshot().rows if r.variable == "none"]
    assert row.value is None and row.countdown_s == 60


def test_a_changed_config_applies_at_the_next_step_where_perfmon_waits_for_its_config_update():
    """perfmon re-reads other-config every config_update_period (1800 s), or at the next run after a
    `refresh` command on its socket. The engine sees a metadata change at its next step (libvirt's
    metadata-change event)."""
    alarming = config_xml([dict(ALWAYS_BAD, alarm_auto_inhibit_period="0")])
    quiet = config_xml([dict(ALWAYS_BAD, alarm_trigger_level="0.95", alarm_auto_inhibit_period="0")])
    p = Pair(STEP_S, vm_xml=alarming)
    p.step(BAD)
    p.info[UUID] = FakeDomainInfo(UUID, DOMAIN, quiet)  # the domain's metadata now
    p.perfmon.other_config[UUID] = quiet  # what XAPI holds now; no refresh command
    for _ in range(40):
        p.step(BAD)
    engine = [t - T0_S for t, *_ in p.engine_alarms()]
    seed = [t - T0_S for t, *_ in p.model_alarms()]
    assert engine == [60]  # the quiet config from the next step on
    assert seed == list(range(60, 1800, 60))  # the old one until the config update at 1800 s


def test_any_rrd_step_runs_perfmons_logic_where_perfmon_takes_only_5_or_60():
    """perfmon's main() refuses an rrd_step other than 5 or 60 (a usage error); --perfmon.step takes
    1..3600 and runs perfmon's update() with that step, which the seed's logic, given that step,
    matches alarm for alarm (as the random sequences also show at 1, 2, 10, 15 and 30 s)."""
    for step_s in (1, 15, 300, 3600):
        pair = Pair(step_s, vm_xml=config_xml([dict(ALWAYS_BAD, alarm_trigger_period=str(2 * step_s),
                                                    alarm_auto_inhibit_period=str(3 * step_s))]))
        for _ in range(8):
            pair.step({"cpu0": 0.75})
        assert pair.engine_alarms() == pair.model_alarms()
        assert [(t - T0_S) // step_s for t, *_rest, sent in pair.engine_alarms() if sent] == [2, 6]


# --- the input side ----------------------------------------------------------------------------------

# Documented: the engine's own default regexes (virtio/SCSI disks, today's interface names).
REGEX_EXTENSIONS = {("vm", "disk_usage"): VM_DEFAULT_REGEX["disk_usage"],
                    ("host", "network_usage"): HOST_DEFAULT_REGEX["network_usage"]}
POOLS = {
    "rrd_regex": ["cpu[0-9]+", "", None, "cpu[", "(", "^vif_0_rx$", "vbd_(xvd|hd)[a-z]+_(read|write)"],
    "consolidation_fn": ["sum", "average", "max", "get_percent_fs_usage", "median", "", None, "Sum"],
    "alarm_trigger_level": ["0.5", "inf", "nan", "-1", "1e3", "", None, "high", " 2 ", "1_0", "0x10", "+.5"],
    "alarm_trigger_period": ["60", "-60", "0", " 5 ", "+5", "1.5", "", None, "1_000", "1e3", "007", "x"],
    "alarm_auto_inhibit_period": ["3600", "-1", "0", "1.5", "", None, "2_0", " 30", "-0"],
    "alarm_trigger_sense": ["high", "low", "", None, "HIGH", "below", " high"],
    "alarm_priority": ["1", "5", "05", "high", "", None, " 3 ", "-2"],
}
NAMES = ["cpu_usage", "network_usage", "disk_usage", "fs_usage", "memory", "x"]


def random_variable_xml(rng: random.Random) -> str:
    """A <variable> of random tags (each left out now and then) with values perfmon may or may not
    take; None: the tag without a value attribute, which getAttribute reads as ''."""
    parts = ['<name value="%s"/>' % rng.choice(NAMES)]
    tags = [t for t in POOLS if rng.random() < 0.6]
    rng.shuffle(tags)
    for tag in tags:
        value = rng.choice(POOLS[tag])
        parts.append("<%s/>" % tag if value is None else '<%s value="%s"/>' % (tag, value))
    return "<variable>%s</variable>" % "".join(parts)


def seed_settings(object_type: str, xml: str):
    """The seed's reading of a one-variable document: None if rejected, else its settings."""
    perfmon = Perfmon(STEP_S)
    perfmon.all_xmlconfigs["o"] = xml
    monitor = (VMMonitor if object_type == "vm" else HOSTMonitor)(perfmon, "o")
    if perfmon.errors:
        return None
    (var,) = monitor.variables
    fn = {sum: "sum", max: "max"}.get(var.consolidation_fn, var.consolidation_fn.__name__)
    return (var.name, var.rrd_regex.pattern, fn, var.alarm_trigger_period, var.alarm_auto_inhibit_period,
            var.alarm_priority, _verdicts(lambda v: _seed_test_level(var, v)))


def _seed_test_level(var, value):
    var.value = value
    return var.test_level()


PROBES = (-math.inf, -1.0, 0.0, 0.5, 1.0, 2.0, 1000.0, math.inf, math.nan)


def _verdicts(is_bad):
    """Level and sense together, as both use them: bad or not for each probe value."""
    return tuple(is_bad(v) for v in PROBES)


def engine_settings(object_type: str, xml: str):
    try:
        (var,) = parse_object_config(xml, object_type).variables
    except PerfmonConfigError:
        return None
    return (var.name, var.rrd_regex, var.consolidation_fn, var.alarm_trigger_period_s,
            var.alarm_auto_inhibit_period_s, var.alarm_priority, _verdicts(var.is_bad))


def as_documented(object_type: str, xml: str) -> tuple:
    """What the engine is documented to do with ``xml``, said as the document the seed would need to
    be shown to do the same: the engine's own default regexes, and fs_usage in the host config with
    perfmon's VM defaults (the seed's host has none: on XenServer fs_usage is set on dom0's VM)."""
    name = xml.split('<name value="', 1)[1].split('"', 1)[0]
    if "<rrd_regex" not in xml and (object_type, name) in REGEX_EXTENSIONS:
        xml = xml.replace("</variable>", '<rrd_regex value="%s"/></variable>' % REGEX_EXTENSIONS[object_type, name])
    if object_type == "host" and name == "fs_usage":
        object_type = "vm"
    return object_type, xml


def canonical_priority(settings):
    """The engine writes an integer priority canonically ("05" → "5"); XAPI's message.create takes
    the priority as an integer, so both name the same one."""
    if settings is None:
        return None
    priority = settings[5]
    try:
        priority = str(int(priority))
    except ValueError:
        pass
    return settings[:5] + (priority,) + settings[6:]


@pytest.mark.parametrize("object_type", ["vm", "host"])
def test_the_engine_accepts_what_perfmon_accepts_and_reads_the_same_settings(object_type):
    rng = random.Random(object_type)
    accepted = rejected = 0
    for _ in range(3000):
        xml = "<config>%s</config>" % random_variable_xml(rng)
        expected = canonical_priority(seed_settings(*as_documented(object_type, xml)))
        assert engine_settings(object_type, xml) == expected, xml
        accepted += expected is not None
        rejected += expected is None
    assert accepted > 200 and rejected > 200  # both outcomes, or the comparison proves little


@pytest.mark.parametrize("object_type,name,differs", [
    ("vm", "disk_usage", "rrd_regex"), ("host", "network_usage", "rrd_regex"), ("host", "fs_usage", "defaults")])
def test_each_documented_default_differs_from_perfmons(object_type, name, differs):
    """The exceptions as_documented() makes are real differences, not spare ones."""
    xml = '<config><variable><name value="%s"/><alarm_trigger_level value="1"/></variable></config>' % name
    if name == "fs_usage":
        xml = '<config><variable><name value="fs_usage"/></variable></config>'
    assert engine_settings(object_type, xml) is not None
    assert canonical_priority(seed_settings(object_type, xml)) != engine_settings(object_type, xml)


@pytest.mark.parametrize("variable,why", [
    ('<name value=""/><rrd_regex value="a"/><alarm_trigger_level value="1"/>', "a name without a value"),
    ('<name value="%s"/><rrd_regex value="a"/><alarm_trigger_level value="1"/>' % ("n" * 129), "a 129-character name"),
    ('<name value="x"/><rrd_regex value="%s"/><alarm_trigger_level value="1"/>' % ("a" * 513), "a 513-character regex"),
    ('<name value="x"/><rrd_regex value="a"/><alarm_trigger_level value="%s"/>' % ("1" * 65), "a 65-character level"),
    ('<name value="x"/><rrd_regex value="a"/><alarm_trigger_level value="1"/><alarm_trigger_period value="%d"/>'
     % 2 ** 31, "a period beyond 2^31-1 s"),
    ('<name value="x"/><rrd_regex value="a"/><alarm_trigger_level value="1"/><alarm_trigger_period value="%s"/>'
     % ("1" * 13), "a 13-digit period"),
    ('<name value="x"/><rrd_regex value="a"/><alarm_trigger_level value="1"/><alarm_priority value="%s"/>'
     % ("p" * 129), "a 129-character priority"),
])
def test_limits_perfmon_did_not_have(variable, why):
    """Bounds on what becomes a label value or costs time; perfmon took all of these."""
    xml = "<config><variable>%s</variable></config>" % variable
    assert seed_settings("vm", xml) is not None, why
    assert engine_settings("vm", xml) is None, why


@pytest.mark.parametrize("doc,why", [
    ("<config>%s</config>" % "".join("<variable><name value='v%d'/><rrd_regex value='a'/>"
                                     "<alarm_trigger_level value='1'/></variable>" % i for i in range(65)),
     "65 variables"),
    ("<config><!--%s--></config>" % ("c" * 66000), "a document over 64 KiB"),
    ("<!DOCTYPE config><config/>", "a DOCTYPE"),
    ("<settings><variable><name value='x'/><rrd_regex value='a'/><alarm_trigger_level value='1'/></variable>"
     "</settings>", "a root element other than <config>"),
])
def test_documents_perfmon_took_and_the_engine_refuses(doc, why):
    perfmon = Perfmon(STEP_S)
    perfmon.all_xmlconfigs["o"] = doc
    VMMonitor(perfmon, "o")
    assert perfmon.errors == [], why
    with pytest.raises(PerfmonConfigError):
        parse_object_config(doc, "vm")


def test_a_data_source_without_a_value_reads_zero_in_the_engine_as_in_perfmon():
    """perfmon's ObjectReport.get_value reads a column short of a row as 0.0; the engine reads a data
    source that exists without a value (a counter that went back, a first sample) as 0.0 too. Run
    both on rows where cpu1 has no value this step: an average over cpu0 and cpu1 is cpu0 / 2."""
    var = {"name": "avg", "rrd_regex": "cpu[01]", "consolidation_fn": "average", "alarm_trigger_level": "0.5",
           "alarm_trigger_period": "0", "alarm_auto_inhibit_period": "0"}
    page = rrd_updates({("vm", "u"): [{"cpu0": 1.0, "cpu1": 2.0}, {"cpu0": 3.0}]}, num_rows=2)
    assert [page.get_obj_report_by_uuid("u").get_value("cpu1", r) for r in (0, 1)] == [2.0, 0.0]  # the harness
    for cpu0, alarms in ((0.9, 0), (1.1, 1)):   # 0.45 and 0.55 against 0.5
        monitor = engine_monitor(config_xml([var]))
        events = monitor.step(DataSources({"cpu0": 0.0, "cpu1": 0.0}), T0_S + STEP_S, STEP_S, lambda: None)
        events += monitor.step(DataSources({"cpu0": cpu0}, frozenset({"cpu1"})), T0_S + 2 * STEP_S, STEP_S,
                               lambda: None)
        seed = SeedVM(STEP_S, config_xml([var]))
        seed.run(T0_S + 2 * STEP_S, {"cpu0": 0.0, "cpu1": 0.0}, {"cpu0": cpu0})  # cpu1 a column, short of row 2
        assert [e.value for e in events] == [v for _t, _n, v, _s in seed.alarms()] == ([cpu0 / 2] if alarms else [])


def test_max_over_a_nan_takes_the_data_sources_in_name_order():
    """Python's max keeps a NaN only when it comes first. perfmon's order was its Python 2 dict's
    (hash order); the engine takes matched data sources in name order, and so does the harness's page."""
    var = {"name": "m", "rrd_regex": "cpu", "consolidation_fn": "max", "alarm_trigger_level": "0.5",
           "alarm_trigger_period": "60", "alarm_auto_inhibit_period": "0"}
    for row, alarms in (({"cpu0": math.nan, "cpu1": 0.9}, 0), ({"cpu0": 0.9, "cpu1": math.nan}, 1)):
        monitor = engine_monitor(config_xml([var]))
        events = monitor.step(DataSources(row), T0_S + STEP_S, STEP_S, lambda: None)
        seed = SeedVM(STEP_S, config_xml([var]))
        seed.run(T0_S + STEP_S, row)
        assert len(events) == len(seed.alarms()) == alarms


def test_fs_usage_exact_fraction_alarms_where_perfmons_whole_percent_does_for_whole_percent_levels():
    """perfmon's fs_usage is df's Use% / 100 (rounded up to a whole percent); the engine's is the exact
    used / (used + available). Both are run, each on its own reading of the same filesystem: with a
    level in whole percent (the default 0.9) they alarm alike, since a usage rounded up to a whole
    percent is above n % exactly when the usage is. With a finer level they can differ (last case)."""

    def alarms(used: int, avail: int, level: str) -> Tuple[int, int]:
        var = {"name": "fs_usage", "alarm_trigger_level": level, "alarm_trigger_period": "0",
               "alarm_auto_inhibit_period": "0"}
        exact = Fraction(used, used + avail)
        monitor = engine_monitor(config_xml([var]))
        engine = monitor.step(DataSources({}), T0_S + STEP_S, STEP_S, lambda: float(exact))
        seed = SeedVM(STEP_S, config_xml([var]))
        seed.perfmon.fs_usage = lambda: math.ceil(exact * 100) / 100.0  # df's Use%, as perfmon parsed it
        seed.run(T0_S + STEP_S, {})
        return len(engine), len(seed.alarms())

    rng = random.Random(9)
    fired = 0
    for _ in range(300):
        used, avail = rng.randint(0, 10 ** 6), rng.randint(1, 10 ** 6)
        level = "0.%02d" % rng.randint(0, 99)
        engine, seed = alarms(used, avail, level)
        assert engine == seed, (used, avail, level, engine, seed)
        fired += engine
    assert 0 < fired < 300  # both outcomes were exercised
    assert alarms(8935, 1065, "0.894") == (0, 1)   # 89.35 % used: df says 90 % > 89.4 %, exactly it is not
    # With levels finer than a percent, each side follows its own reading: the engine the exact
    # fraction, perfmon df's whole percent (written out here, not taken from either).
    differ = 0
    for _ in range(200):
        used, avail = rng.randint(0, 10 ** 6), rng.randint(1, 10 ** 6)
        level = "0.%04d" % rng.randint(0, 9999)
        exact = Fraction(used, used + avail)
        want = (int(exact > Fraction(level)), int(math.ceil(exact * 100) / 100.0 > float(level)))
        assert alarms(used, avail, level) == want, (used, avail, level)
        differ += want[0] != want[1]
    assert differ > 0  # the cases where the deviation shows were exercised
