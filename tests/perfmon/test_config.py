"""Parsing, perfmon's defaults per object type, validation messages, the --perfmon.config file."""

import re

import pytest

from virt_exporter.perfmon.config import (
    PERFMON_METADATA_NS,
    PerfmonConfigError,
    load_perfmon_file,
    parse_object_config,
    parse_perfmon_file,
    severity_of_priority,
)


def one(xml, object_type="vm"):
    (var,) = parse_object_config(xml, object_type).variables
    return var


def test_vm_defaults_are_perfmons():
    cpu = one('<config><variable><name value="cpu_usage"/><alarm_trigger_level value="0.5"/></variable></config>')
    assert (cpu.rrd_regex, cpu.consolidation_fn, cpu.alarm_trigger_period_s, cpu.alarm_auto_inhibit_period_s,
            cpu.alarm_trigger_sense, cpu.alarm_priority) == ("cpu[0-9]+", "average", 60, 3600, "high", "5")
    net = one('<config><variable><name value="network_usage"/><alarm_trigger_level value="1e6"/></variable></config>')
    assert (net.rrd_regex, net.consolidation_fn, net.alarm_trigger_level) == ("vif_[0-9]+_[rt]x", "sum", 1e6)
    fs = one('<config><variable><name value="fs_usage"/></variable></config>')
    assert (fs.consolidation_fn, fs.alarm_trigger_level, fs.alarm_auto_inhibit_period_s) == (
        "get_percent_fs_usage", 0.9, 604800)


def test_vm_disk_usage_default_also_matches_virtio_and_scsi_targets():
    disk = one('<config><variable><name value="disk_usage"/><alarm_trigger_level value="1"/></variable></config>')
    for name in ("vbd_xvda_read", "vbd_hdc_write", "vbd_vda_read", "vbd_sdb_write"):
        assert disk.regex.search(name), name
    assert not disk.regex.search("vbd_vda_flush")


def test_host_defaults_and_network_regex_matches_physical_interfaces_only():
    net = one('<config><variable><name value="network_usage"/><alarm_trigger_level value="1"/></variable></config>',
              "host")
    for ifname in ("eth0", "ens3", "eno1", "enp1s0", "enx001122334455", "em1", "bond0"):
        assert net.regex.search("pif_%s_rx" % ifname) and net.regex.search("pif_%s_tx" % ifname), ifname
    for ifname in ("lo", "vnet0", "tap3", "virbr0", "br0", "docker0", "veth1a2b", "eth0.100", "vethens3"):
        assert not net.regex.search("pif_%s_rx" % ifname), ifname
    cpu = one('<config><variable><name value="cpu_usage"/><alarm_trigger_level value="0.9"/></variable></config>',
              "host")
    assert (cpu.rrd_regex, cpu.consolidation_fn) == ("cpu[0-9]+", "average")
    # fs_usage takes perfmon's VM defaults in the host config too.
    fs = one('<config><variable><name value="fs_usage"/></variable></config>', "host")
    assert (fs.consolidation_fn, fs.alarm_trigger_level, fs.alarm_auto_inhibit_period_s) == (
        "get_percent_fs_usage", 0.9, 604800)


def test_a_host_disk_usage_has_no_default_regex_as_in_perfmon():
    with pytest.raises(PerfmonConfigError, match="variable disk_usage: no default rrd_regex"):
        parse_object_config('<config><variable><name value="disk_usage"/><alarm_trigger_level value="1"/>'
                            '</variable></config>', "host")


def test_libvirt_namespaced_metadata_is_accepted_by_local_name():
    # What `virsh metadata --uri NS --key perfmon --set '<config>…'` stores (libvirt 9 prefixes every element).
    xml = ('<perfmon:config xmlns:perfmon="%s"><perfmon:variable><perfmon:name value="cpu_usage"/>'
           '<perfmon:alarm_trigger_level value="0.5"/></perfmon:variable></perfmon:config>' % PERFMON_METADATA_NS)
    var = one(xml)
    assert (var.name, var.alarm_trigger_level) == ("cpu_usage", 0.5)
    plain = one('<config><variable><name value="cpu_usage"/><alarm_trigger_level value="0.5"/></variable></config>')
    assert var.identity == plain.identity


@pytest.mark.parametrize("variable,message", [
    ('<name value="x"/><rrd_regex value="cpu[0-9"/><alarm_trigger_level value="1"/>',
     r"^variable x: regex 'cpu\[0-9' does not compile: .*"),
    ('<name value="x"/><rrd_regex value="a"/><consolidation_fn value="median"/><alarm_trigger_level value="1"/>',
     r"^variable x: consolidation function 'median' not supported \(one of sum, average, max, get_percent_fs_usage\)$"),
    ('<name value="cpu_usage"/><alarm_trigger_level value="half"/>',
     r"^variable cpu_usage: alarm_trigger_level 'half' is not a number$"),
    ('<name value="cpu_usage"/><alarm_trigger_level value="1"/><alarm_trigger_period value="1.5"/>',
     r"^variable cpu_usage: alarm_trigger_period '1.5' is not an integer number of seconds$"),
    ('<name value="cpu_usage"/><alarm_trigger_level value="1"/><alarm_auto_inhibit_period value="1h"/>',
     r"^variable cpu_usage: alarm_auto_inhibit_period '1h' is not an integer number of seconds$"),
    ('<name value="cpu_usage"/><alarm_trigger_level value="1"/><alarm_trigger_period value="-2147483648"/>',
     r"^variable cpu_usage: alarm_trigger_period -2147483648 is out of range -2147483647..2147483647 s$"),
    ('<name value="cpu_usage"/><alarm_trigger_level value="1"/><alarm_priority value="%s"/>' % ("p" * 129),
     r"^variable cpu_usage: alarm_priority must be at most 128 printable characters$"),
    ('<name value="cpu_usage"/>', r"^variable cpu_usage: no default alarm_trigger_level - please specify one$"),
    ('<name value="my_var"/><alarm_trigger_level value="1"/>',
     r"^variable my_var: no default rrd_regex - please specify one$"),
    ('<alarm_trigger_level value="1"/>', r"^variable missing 'name' tag$"),
    ('<name/><alarm_trigger_level value="1"/>', r"^variable has a 'name' tag without a value$"),
    # perfmon reads a missing value attribute as '', and float('') fails
    ('<name value="cpu_usage"/><alarm_trigger_level/>',
     r"^variable cpu_usage: alarm_trigger_level '' is not a number$"),
])
def test_validation_errors_are_one_precise_line(variable, message):
    with pytest.raises(PerfmonConfigError) as err:
        parse_object_config("<config><variable>%s</variable></config>" % variable, "vm")
    assert re.match(message, str(err.value)), str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("doc,message", [
    ("<config><variable>", r"^perfmon config: XML parse error: "),
    ("<settings/>", r"^root element is <settings>, expected <config>$"),
    ('<!DOCTYPE config [<!ENTITY a "b">]><config/>', r"^perfmon config: a DOCTYPE is not allowed$"),
    ("<config>" + "<variable/>" * 65 + "</config>", r"^65 variables, more than 64$"),
])
def test_document_errors(doc, message):
    with pytest.raises(PerfmonConfigError) as err:
        parse_object_config(doc, "vm")
    assert re.match(message, str(err.value)), str(err.value)


def test_repeated_variable_last_wins_and_warnings_are_given():
    cfg = parse_object_config('<config><variable><name value="cpu_usage"/><alarm_trigger_level value="0.5"/>'
                              '<colour value="red"/></variable><variable><name value="cpu_usage"/>'
                              '<alarm_trigger_level value="0.7"/><alarm_trigger_sense value="High"/></variable>'
                              '</config>', "vm")
    (var,) = cfg.variables
    assert var.alarm_trigger_level == 0.7 and not var.sense_high
    assert any("appears more than once" in w for w in cfg.warnings)
    assert any("unknown tags ignored: colour" in w for w in cfg.warnings)
    assert any("'High' is not 'high'" in w for w in cfg.warnings)


def test_severity_mapping_follows_xenserver_priorities():
    assert [severity_of_priority(p) for p in ("0", "1", "2", "3", "4", "5", "9", "high")] == [
        "critical", "critical", "critical", "warning", "warning", "info", "info", "info"]


def test_perfmon_file_with_host_and_vm_sections(tmp_path):
    path = tmp_path / "perfmon.xml"
    path.write_text("""<perfmon>
  <host><config><variable><name value="cpu_usage"/><alarm_trigger_level value="0.9"/></variable></config></host>
  <vm><config><variable><name value="cpu_usage"/><alarm_trigger_level value="0.5"/></variable></config></vm>
</perfmon>""")
    fc = load_perfmon_file(str(path))
    assert fc.host.variables[0].alarm_trigger_level == 0.9 and fc.vm.variables[0].alarm_trigger_level == 0.5
    assert fc.host.object_type == "host" and fc.vm.object_type == "vm"
    assert parse_object_config(fc.vm_xml, "vm").variables == fc.vm.variables
    empty = parse_perfmon_file("<perfmon/>")
    assert empty.host is None and empty.vm is None


@pytest.mark.parametrize("doc,message", [
    ("<perfmon><vm><config><variable><name value='cpu_usage'/></variable></config></vm></perfmon>",
     r"^F: vm config: variable cpu_usage: no default alarm_trigger_level - please specify one$"),
    ("<perfmon><guest/></perfmon>", r"^F: unexpected <guest> in <perfmon>: expected <host> and/or <vm>$"),
    ("<perfmon><vm/></perfmon>", r"^F: <vm> must contain exactly one <config> element$"),
    ("<perfmon><vm><config/></vm><vm><config/></vm></perfmon>", r"^F: <vm> appears more than once$"),
    ("<config/>", r"^F: root element is <config>, expected <perfmon>$"),
    ("<perfmon>", r"^F: XML parse error: "),
])
def test_perfmon_file_errors(doc, message):
    with pytest.raises(PerfmonConfigError) as err:
        parse_perfmon_file(doc, "F")
    assert re.match(message, str(err.value)), str(err.value)


def test_missing_file_is_one_line(tmp_path):
    with pytest.raises(PerfmonConfigError, match=r"^.*/nope\.xml: No such file or directory$"):
        load_perfmon_file(str(tmp_path / "nope.xml"))


@pytest.mark.parametrize("variable,warning,check", [
    # perfmon's int() takes a negative period: the first bad step alarms
    ('<name value="cpu_usage"/><alarm_trigger_level value="1"/><alarm_trigger_period value="-60"/>',
     "a negative period", lambda v: v.alarm_trigger_period_s == -60),
    # float('inf') and float('nan') are levels perfmon compares as they are
    ('<name value="cpu_usage"/><alarm_trigger_level value="inf"/>', "is not finite",
     lambda v: v.alarm_trigger_level == float("inf")),
    ('<name value="cpu_usage"/><alarm_trigger_level value="nan"/>', "is not finite",
     lambda v: v.alarm_trigger_level != v.alarm_trigger_level),
    # getAttribute('value') of a missing attribute is '': a regex matching every data source
    ('<name value="x"/><rrd_regex/><alarm_trigger_level value="1"/>', "matches every data source",
     lambda v: v.rrd_regex == "" and v.regex.search("anything")),
    ('<name value="x"/><rrd_regex value=""/><alarm_trigger_level value="1"/>', "matches every data source",
     lambda v: v.rrd_regex == ""),
    # perfmon passes any priority string on to the alarm
    ('<name value="cpu_usage"/><alarm_trigger_level value="1"/><alarm_priority value="high"/>', "passed on as it is",
     lambda v: v.alarm_priority == "high"),
    # anything but "high" means low
    ('<name value="cpu_usage"/><alarm_trigger_level value="1"/><alarm_trigger_sense value=""/>', "means 'low'",
     lambda v: not v.sense_high and v.is_bad(0.5)),
])
def test_accepted_as_perfmon_accepts_with_one_warning(variable, warning, check):
    config = parse_object_config("<config><variable>%s</variable></config>" % variable, "vm")
    assert len(config.warnings) == 1 and warning in config.warnings[0], config.warnings
    assert check(config.variables[0])

