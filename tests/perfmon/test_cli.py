"""perfmon-check and perfmon-rules: exit codes, explanations, and output promtool / amtool accept."""

import io
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from promtool import promtool
from virt_exporter.perfmon.cli import perfmon_check_main, perfmon_rules_main

FILE = """<perfmon>
  <host><config>
    <variable><name value="cpu_usage"/><alarm_trigger_level value="0.9"/></variable>
    <variable><name value="fs_usage"/></variable>
  </config></host>
  <vm><config>
    <variable><name value="cpu_usage"/><alarm_trigger_level value="0.5"/><alarm_trigger_period value="10"/>
      <alarm_auto_inhibit_period value="60"/><alarm_priority value="2"/></variable>
    <variable><name value="eth0_rx"/><rrd_regex value="vif_0_rx"/><alarm_trigger_level value="1000"/></variable>
  </config></vm>
</perfmon>"""


def run(main, argv):
    out, err = io.StringIO(), io.StringIO()
    return main(argv, out=out, err=err), out.getvalue(), err.getvalue()


def test_check_explains_effective_settings(tmp_path):
    path = tmp_path / "perfmon.xml"
    path.write_text(FILE)
    rc, out, err = run(perfmon_check_main, [str(path), "--step", "5"])
    assert rc == 0 and err == ""
    assert "host config (2 variables):" in out and "default VM config (2 variables):" in out
    assert "alarm_trigger_period       10 s = 2 consecutive bad steps of 5 s" in out
    assert "alarm_priority             2 (severity critical)" in out
    assert "get_percent_fs_usage" in out and "604800 s" in out
    assert "urn:virt-exporter:perfmon:1" in out


def test_check_a_bare_metadata_document_and_errors(tmp_path):
    doc = tmp_path / "meta.xml"
    doc.write_text('<config><variable><name value="network_usage"/>'
                   '<alarm_trigger_level value="1e6"/></variable></config>')
    rc, out, _ = run(perfmon_check_main, [str(doc), "--object", "host"])
    assert rc == 0 and "^pif_(eth" in out
    doc.write_text('<config><variable><name value="cpu_usage"/><alarm_trigger_level value="1"/>'
                   '<consolidation_fn value="median"/></variable></config>')
    rc, out, err = run(perfmon_check_main, [str(doc)])
    assert rc == 2 and out == ""
    assert err == ("perfmon-check: error: %s: variable cpu_usage: consolidation function 'median' not supported "
                   "(one of sum, average, max, get_percent_fs_usage)\n" % doc)
    rc, _, err = run(perfmon_check_main, [str(tmp_path / "missing.xml")])
    assert rc == 2 and err.endswith("missing.xml: No such file or directory\n")
    rc, _, err = run(perfmon_check_main, [])
    assert rc == 2 and err.count("\n") == 1


@pytest.mark.prometheus
def test_rules_output_passes_promtool_and_routes_pass_amtool(tmp_path):
    path = tmp_path / "perfmon.xml"
    path.write_text(FILE)
    rc, out, err = run(perfmon_rules_main, ["--config", str(path), "--step", "5", "--routes-file",
                                            str(tmp_path / "routes.yml")])
    assert rc == 0
    assert "variable eth0_rx left out" in err and "by index" in err
    rules = tmp_path / "native.rules.yml"
    rules.write_text(out)
    promtool("check", "rules", rules)
    doc = yaml.safe_load(out)
    alerts = [r for g in doc["groups"] for r in g["rules"] if "alert" in r]
    assert [(a["labels"]["perfmon_rule"], a["for"]) for a in alerts] == [
        ("host/cpu_usage", "55s"), ("host/fs_usage", "55s"), ("vm/cpu_usage", "5s")]
    routes = yaml.safe_load((tmp_path / "routes.yml").read_text())["routes"]
    assert [r["repeat_interval"] for r in routes] == ["3600s", "604800s", "60s"]
    am = yaml.safe_load((Path(__file__).resolve().parents[2] / "alerts" / "alertmanager.yml").read_text())
    am["route"]["routes"] += routes
    am_path = tmp_path / "am.yml"
    am_path.write_text(yaml.safe_dump(am))
    amtool = shutil.which("amtool") or "/usr/bin/amtool"
    p = subprocess.run([amtool, "check-config", str(am_path)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr


def test_rules_without_routes_file_appends_them_as_comments(tmp_path):
    path = tmp_path / "perfmon.xml"
    path.write_text(FILE)
    rc, out, _ = run(perfmon_rules_main, ["--config", str(path), "--domain", "web1"])
    assert rc == 0
    assert '# - matchers:' in out and 'perfmon_rule="vm/web1/cpu_usage"' in out
    doc = yaml.safe_load(out)  # the comment block leaves the YAML a rules file
    assert {g["name"] for g in doc["groups"]} == {"perfmon-native-host", "perfmon-native-vm-web1"}
