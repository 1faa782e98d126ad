"""``virt-exporter mixin``: the shipped alerts/ are its output for the default knobs, knobs change the
rules they name (and only those), a bad knobs file is one line and exit 2, a group switched on or off
moves its file, and the dashboards renderer is called when the package has one."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Dict

import pytest
import yaml

from promtool import promtool
from virt_exporter.mixin.config import FOR, THRESHOLDS, WINDOWS, MixinConfig, parse_config

REPO = Path(__file__).resolve().parents[2]
ALERTS = REPO / "alerts"


def run(*args: str) -> subprocess.CompletedProcess:
    """The real command line, as an operator runs it."""
    return subprocess.run([sys.executable, "-m", "virt_exporter", "mixin", *args], capture_output=True, text=True,
                          cwd=str(REPO), timeout=60)


def shipped_rules() -> Dict[str, str]:
    return {p.relative_to(REPO).as_posix(): p.read_text()
            for p in sorted(ALERTS.glob("*.rules.yml")) + sorted((ALERTS / "optional").glob("*.rules.yml"))}


def rules_by_name(text: str) -> Dict[str, dict]:
    return {r.get("alert") or r["record"]: r for g in yaml.safe_load(text)["groups"] for r in g["rules"]}


def test_shipped_rules_and_dashboards_are_the_output_for_the_default_knobs(tmp_path: Path):
    p = run("--output-dir", str(tmp_path))
    assert p.returncode == 0, p.stderr
    generated = {p.relative_to(tmp_path).as_posix(): p.read_text() for p in sorted(tmp_path.rglob("*.rules.yml"))}
    assert sorted(generated) == sorted(shipped_rules())
    for path, text in shipped_rules().items():
        assert generated[path] == text, "%s is not the generator's output: virt-exporter mixin --output-dir ." % path
    # the dashboards, to the byte
    boards = {p.name: p.read_text() for p in sorted((tmp_path / "dashboards").glob("*.json"))}
    shipped = {p.name: p.read_text() for p in sorted((REPO / "dashboards").glob("*.json"))}
    assert boards and boards == shipped, "dashboards/ is not the generator's output: virt-exporter mixin --output-dir ."


def test_defaults_file_is_the_defaults():
    p = run("--print-defaults")
    assert p.returncode == 0, p.stderr
    doc = yaml.safe_load(p.stdout)
    assert parse_config(doc) == MixinConfig()
    assert set(doc["thresholds"]) == {t.key for t in THRESHOLDS}
    assert set(doc["windows"]) == set(WINDOWS) and set(doc["for"]) == set(FOR)


def test_knobs_change_exactly_what_they_name(tmp_path: Path):
    knobs = tmp_path / "knobs.yml"
    knobs.write_text("job_selector: 'job=\"kvm\", env=\"prod\"'\n"
                     "runbook_url: https://wiki.example.org/virt-runbook\n"
                     "groups: {neat: true}\n"
                     "thresholds: {vcpu_steal_ratio: 0.25, guest_swap_in_bytes_per_second: 4096}\n"
                     "windows: {vcpu_steal: 10m}\n"
                     "for: {LibvirtDomainVcpuSteal: 1h, VirtExporterDown: 2m}\n")
    out = tmp_path / "out"
    p = run("--config", str(knobs), "--output-dir", str(out))
    assert p.returncode == 0, p.stderr
    assert (out / "alerts/neat.rules.yml").exists() and not (out / "alerts/optional/neat.rules.yml").exists()
    assert (out / "alerts/optional/perfmon.rules.yml").exists()
    vcpu = rules_by_name((out / "alerts/vcpu.rules.yml").read_text())
    assert vcpu["LibvirtDomainVcpuSteal"]["for"] == "1h"
    assert "+ 0.25\n" in vcpu["instance:libvirt_vcpu_steal_threshold:ratio"]["expr"]
    assert "[10m]" in vcpu["domain:libvirt_vcpu_steal:ratio"]["expr"]
    assert "the last 10 minutes" in vcpu["LibvirtDomainVcpuSteal"]["annotations"]["description"]
    assert vcpu["LibvirtDomainVcpuSteal"]["annotations"]["runbook_url"] == \
        "https://wiki.example.org/virt-runbook#libvirtdomainvcpusteal"
    guest = rules_by_name((out / "alerts/guest.rules.yml").read_text())
    assert "+ 4096\n" in guest["instance:libvirt_guest_swap_in_threshold:bytes_per_second"]["expr"]
    exporter = rules_by_name((out / "alerts/exporter.rules.yml").read_text())
    assert exporter["VirtExporterDown"]["expr"] == \
        'up{job="kvm", env="prod"} == 0\nor\nabsent(up{job="kvm", env="prod"})\n'
    assert exporter["VirtExporterDown"]["for"] == "2m" and exporter["LibvirtDown"]["for"] == "5m"
    # everything else as shipped
    assert (out / "alerts/numa.rules.yml").read_text() == \
        (ALERTS / "numa.rules.yml").read_text().replace('job="virt-exporter"', 'job="kvm", env="prod"').replace(
            "docs/runbook.md", "https://wiki.example.org/virt-runbook")
    for path in sorted((out / "alerts").rglob("*.rules.yml")):
        promtool("check", "rules", path)


def test_switching_a_group_off_again_moves_its_file_back(tmp_path: Path):
    knobs = tmp_path / "knobs.yml"
    knobs.write_text("groups: {perfmon: true}\n")
    assert run("--config", str(knobs), "--output-dir", str(tmp_path)).returncode == 0
    assert (tmp_path / "alerts/perfmon.rules.yml").exists()
    assert not (tmp_path / "alerts/optional/perfmon.rules.yml").exists()
    knobs.write_text("groups: {perfmon: false}\n")
    assert run("--config", str(knobs), "--output-dir", str(tmp_path)).returncode == 0
    assert not (tmp_path / "alerts/perfmon.rules.yml").exists(), "Prometheus would still load the group"
    assert (tmp_path / "alerts/optional/perfmon.rules.yml").exists()


BAD_KNOBS = [
    ("thresholds: {vcpu_steal: 0.2}\n", "thresholds.unknown key 'vcpu_steal'"),
    ("treshold: {}\n", "unknown key 'treshold'"),
    ("thresholds: {vcpu_steal_ratio: 1.5}\n", "thresholds.vcpu_steal_ratio: a ratio between 0 and 1"),
    ("thresholds: {disk_latency_seconds: fast}\n", "thresholds.disk_latency_seconds: want a number"),
    ("thresholds: {disk_latency_seconds: -1}\n", "thresholds.disk_latency_seconds: must be >= 0"),
    ("thresholds: {migration_bandwidth_bytes_per_second: 0}\n", "must be > 0"),
    ("windows: {vcpu_steal: 5 minutes}\n", "windows.vcpu_steal: want a Prometheus duration"),
    ("windows: {vcpu_steal: 0s}\n", "windows.vcpu_steal: a window must be longer than 0"),
    ("for: {LibvirtDown: 300}\n", "for.LibvirtDown: want a Prometheus duration"),
    ("for: {NoSuchAlert: 5m}\n", "for.unknown key 'NoSuchAlert'"),
    ("groups: {neat: yes please}\n", "groups.neat: want true or false"),
    ("groups: {cpu: false}\n", "groups.unknown key 'cpu'"),
    ("job_selector: '{job=\"x\"}'\n", "job_selector: want PromQL label matchers"),
    ("job_selector: virt-exporter\n", "job_selector: want PromQL label matchers"),
    ("datacenter_label: data-center\n", "datacenter_label: want a label name"),
    ("runbook_url: 'http://x/runbook.md#top'\n", "runbook_url: want a URL"),
    ("- a list\n", "knobs file: want a mapping"),
    ("thresholds: [\n", "not YAML"),
]


@pytest.mark.parametrize("text,message", BAD_KNOBS, ids=[m for _t, m in BAD_KNOBS])
def test_bad_knobs_are_one_line_and_exit_2(tmp_path: Path, text: str, message: str):
    knobs = tmp_path / "knobs.yml"
    knobs.write_text(text)
    p = run("--config", str(knobs), "--output-dir", str(tmp_path / "out"))
    assert p.returncode == 2
    assert p.stderr.count("\n") == 1 and p.stderr.startswith("virt-exporter mixin: error: "), p.stderr
    assert message in p.stderr and str(knobs) in p.stderr, p.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args,message", [
    ((), "--output-dir is required"),
    (("--output-dir", "x", "--bogus"), "unrecognized arguments: --bogus"),
    (("--config", "/nonexistent/knobs.yml", "--output-dir", "x"), "/nonexistent/knobs.yml: No such file"),
])
def test_bad_arguments_are_one_line_and_exit_2(args: tuple, message: str):
    p = run(*args)
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and message in p.stderr, p.stderr


def test_the_contrib_scrape_config_names_the_job_the_rules_select():
    config = yaml.safe_load((REPO / "contrib/prometheus/prometheus.yml").read_text())
    assert [job["job_name"] for job in config["scrape_configs"]] == ["virt-exporter"]
    assert MixinConfig().job_selector == 'job="virt-exporter"'
    assert any(path.endswith("/alerts/*.rules.yml") for path in config["rule_files"])  # not optional/


def test_docs_list_every_knob_with_its_default():
    text = (REPO / "docs/alerts.md").read_text()
    for t in THRESHOLDS:
        default = str(int(t.default)) if float(t.default).is_integer() else repr(t.default)
        assert "| `%s` | %s | `%s`" % (t.key, default, t.record) in text, t.key
    for key, (default, _help) in WINDOWS.items():
        assert "`%s` %s" % (key, default) in text, key
