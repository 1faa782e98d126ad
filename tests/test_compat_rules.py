"""contrib/prometheus/compat-*.rules.yml: the old exporters' names recorded from ours.

- promtool accepts both files and their hand-written unit tests (tests/compat/*.test.yml) pass;
- no compat rule records a name this exporter exposes itself (that would write a second series);
- every metric of Debian's Go exporter (kumina's 0.2.0, as it exposes them on the test bed) and of
  inovex's exporter (from its source) is named in docs/migrating.md, and every one of the Go
  exporter's but libvirt_up is recorded by compat-kumina.rules.yml;
- on the real test bed, Debian's Go exporter and ours scrape the same guests, ours is fed to promtool
  with compat-kumina.rules.yml, and each old series must come out with the labels and the value the
  Go exporter itself gave (those that did not change between two Go scrapes taken around ours).
"""

from __future__ import annotations

import shutil
import urllib.request
from pathlib import Path
from typing import Dict, List, Tuple

import pytest
import yaml

from childproc import Process
from exporterproc import ExporterProcess, free_port
from promtool import promtool
from scrape import Samples
from virt_exporter.catalogue import metric_rows

REPO = Path(__file__).resolve().parents[1]
RULE_FILES = sorted((REPO / "contrib" / "prometheus").glob("compat-*.rules.yml"))
MIGRATING = REPO / "docs" / "migrating.md"
JOB, INSTANCE = "virt-exporter", "bed"

# Every metric of inovex's exporter, from its collector's descriptors (pkg/exporter in its repository).
INOVEX_METRICS = (
    "libvirt_up", "libvirt_domain_timed_out", "libvirt_domains", "libvirt_domain_info_state",
    "libvirt_domain_info_maximum_memory_bytes", "libvirt_domain_info_memory_usage_bytes",
    "libvirt_domain_info_virtual_cpus", "libvirt_domain_info_cpu_time_seconds_total",
    "libvirt_domain_job_info_type", "libvirt_domain_job_info_time_elapsed_seconds",
    "libvirt_domain_job_info_time_remaining_seconds", "libvirt_domain_job_info_data_total_bytes",
    "libvirt_domain_job_info_data_processed_bytes", "libvirt_domain_job_info_data_remaining_bytes",
    "libvirt_domain_job_info_memory_total_bytes", "libvirt_domain_job_info_memory_processed_bytes",
    "libvirt_domain_job_info_memory_remaining_bytes", "libvirt_domain_job_info_file_total_bytes",
    "libvirt_domain_job_info_file_processed_bytes", "libvirt_domain_job_info_file_remaining_bytes",
    "libvirt_domain_memory_stats_swap_in_bytes", "libvirt_domain_memory_stats_swap_out_bytes",
    "libvirt_domain_memory_stats_unused_bytes", "libvirt_domain_memory_stats_available_bytes",
    "libvirt_domain_memory_stats_usable_bytes", "libvirt_domain_memory_stats_rss_bytes",
    "libvirt_domain_memory_stats_actual_balloon_bytes", "libvirt_domain_memory_stats_major_fault_total",
    "libvirt_domain_memory_stats_minor_fault_total", "libvirt_domain_memory_stats_used_percent",
    "libvirt_domain_block_stats_info", "libvirt_domain_block_stats_read_bytes_total",
    "libvirt_domain_block_stats_read_requests_total", "libvirt_domain_block_stats_write_bytes_total",
    "libvirt_domain_block_stats_write_requests_total", "libvirt_domain_block_stats_read_time_seconds_total",
    "libvirt_domain_block_stats_write_time_seconds_total", "libvirt_domain_block_stats_flush_requests_total",
    "libvirt_domain_block_stats_flush_time_seconds_total", "libvirt_domain_block_stats_capacity_bytes",
    "libvirt_domain_interface_stats_info", "libvirt_domain_interface_stats_receive_bytes_total",
    "libvirt_domain_interface_stats_receive_packets_total", "libvirt_domain_interface_stats_receive_errors_total",
    "libvirt_domain_interface_stats_receive_drops_total", "libvirt_domain_interface_stats_transmit_bytes_total",
    "libvirt_domain_interface_stats_transmit_packets_total", "libvirt_domain_interface_stats_transmit_errors_total",
    "libvirt_domain_interface_stats_transmit_drops_total", "libvirt_domain_vcpu_current",
    "libvirt_domain_vcpu_maximum", "libvirt_domain_vcpu_state", "libvirt_domain_vcpu_time_seconds_total",
    "libvirt_domain_vcpu_wait_seconds_total", "libvirt_domain_vcpu_delay_seconds_total",
    "libvirt_storage_pool_state", "libvirt_storage_pool_capacity_bytes", "libvirt_storage_pool_allocation_bytes",
    "libvirt_storage_pool_available_bytes", "libvirt_domain_info", "libvirt_domain_openstack_info",
)


def recorded(path: Path) -> List[str]:
    return [r["record"] for g in yaml.safe_load(path.read_text())["groups"] for r in g["rules"] if "record" in r]


@pytest.mark.prometheus
@pytest.mark.parametrize("path", RULE_FILES, ids=lambda p: p.name)
def test_promtool_check_rules(path: Path):
    assert "SUCCESS" in promtool("check", "rules", path).stdout


@pytest.mark.prometheus
@pytest.mark.parametrize("name", ("kumina", "inovex"))
def test_promtool_unit_tests(name: str):
    promtool("test", "rules", REPO / "tests" / "compat" / ("%s.test.yml" % name))


def test_both_compat_files_exist():
    assert [p.name for p in RULE_FILES] == ["compat-inovex.rules.yml", "compat-kumina.rules.yml"]


@pytest.mark.parametrize("path", RULE_FILES, ids=lambda p: p.name)
def test_no_compat_rule_records_a_name_we_expose(path: Path):
    ours = {name for _collector, name, _t, _l, _h in metric_rows()}
    clash = sorted(set(recorded(path)) & ours)
    assert not clash, "these would write a second series beside the scraped one: %s" % clash


def test_migrating_names_every_inovex_metric():
    text = MIGRATING.read_text(encoding="utf-8")
    missing = [n for n in INOVEX_METRICS if "`%s`" % n not in text]
    assert not missing, missing


# --------------------------------------------------------------------------------------------
# Debian's Go exporter against ours, on the same guests


def _go_exporter() -> str:
    path = shutil.which("prometheus-libvirt-exporter") or "/usr/bin/prometheus-libvirt-exporter"
    if not Path(path).exists():
        pytest.skip("Debian's prometheus-libvirt-exporter is not installed (scripts/test.sh installs it)")
    return path


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=30) as r:
        return r.read().decode()


def _old_series(samples: Samples, domains: set) -> Dict[Tuple[str, frozenset], float]:
    """libvirt_* series of our guests, empty labels dropped (Prometheus stores no empty label)."""
    out = {}
    for (name, labels), value in samples.values.items():
        d = dict(labels)
        if name.startswith("libvirt_") and d.get("domain") in domains:
            out[(name, frozenset((k, v) for k, v in d.items() if v != ""))] = value
    return out


def _selector(name: str, labels: Dict[str, str]) -> str:
    return "%s{%s}" % (name, ",".join('%s="%s"' % (k, _escape(v)) for k, v in sorted(labels.items())))


def _escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"')


@pytest.mark.prometheus
def test_kumina_names_come_out_as_the_go_exporter_gives_them(standard_guests, tmp_path):
    go_binary = _go_exporter()
    domains = {g.name for g in standard_guests}
    port = free_port()
    go_url = "http://127.0.0.1:%d/metrics" % port
    go = Process("the Go exporter", [go_binary, "--web.listen-address", "127.0.0.1:%d" % port],
                 tmp_path / "go-exporter.log", go_url).start(20)
    try:
        with ExporterProcess() as ours:
            ours.scrape()  # the first sample has no rates; none are compared, but warm it up
            go1_samples = Samples.parse(_get(go_url))
            go1 = _old_series(go1_samples, domains)
            ours_text = ours.scrape_text()
            go2 = _old_series(Samples.parse(_get(go_url)), domains)
    finally:
        go.stop()

    # Every name the Go exporter gives is in the mapping, and recorded unless it is one of ours too.
    go_names = {n for n, _l in go1_samples.values if n.startswith("libvirt_")}
    text = MIGRATING.read_text(encoding="utf-8")
    unmapped = sorted(n for n in go_names if "`%s`" % n not in text)
    assert not unmapped, "not in docs/migrating.md: %s" % unmapped
    kumina = set(recorded(REPO / "contrib" / "prometheus" / "compat-kumina.rules.yml"))
    assert go_names - kumina == {"libvirt_up"}, go_names - kumina

    # Series that held still across our scrape are what the Go exporter says at its moment too. CPU
    # time has another resolution there (below): compared with a tolerance, not by promtool.
    stable = {k: v for k, v in go1.items()
              if go2.get(k) == v and k[0] != "libvirt_domain_info_cpu_time_seconds_total"}
    names = {n for n, _l in stable}
    for must in ("libvirt_domain_state_code", "libvirt_domain_info_maximum_memory_bytes",
                 "libvirt_domain_info_memory_usage_bytes", "libvirt_domain_info_virtual_cpus",
                 "libvirt_domain_block_stats_read_bytes_total", "libvirt_domain_interface_stats_receive_bytes_total"):
        assert must in names, "nothing stable to compare for %s: %s" % (must, sorted(names))

    inputs = []
    for (name, labels), value in Samples.parse(ours_text).values.items():
        d = dict(labels)
        if "domain" in d and d["domain"] not in domains:
            continue  # other tests' guests come and go
        d.update(job=JOB, instance=INSTANCE)
        inputs.append({"series": _selector(name, d), "values": "%r %r %r" % (value, value, value)})
    cases = []
    for (name, labels), value in sorted(stable.items(), key=lambda kv: (kv[0][0], sorted(kv[0][1]))):
        d = dict(labels, job=JOB, instance=INSTANCE)
        key = {k: d[k] for k in ("domain", "target_device") if k in d}
        cases.append({"expr": _selector(name, key), "eval_time": "1m",
                      "exp_samples": [{"labels": _selector(name, d), "value": value}]})
    test = {"rule_files": [str(REPO / "contrib" / "prometheus" / "compat-kumina.rules.yml")],
            "evaluation_interval": "1m",
            "tests": [{"interval": "1m", "input_series": inputs, "promql_expr_test": cases}]}
    path = tmp_path / "kumina-live.test.yml"
    path.write_text(yaml.safe_dump(test, sort_keys=False))
    promtool("test", "rules", path)

    # CPU time moves while we look: ours, read between the two Go scrapes, lies between them, in the
    # same unit. The Go exporter's comes from virDomainGetInfo in clock ticks of the QEMU process, ours
    # from the cgroup (measured: up to 0.06 s apart on a guest that has used 4 s): allow a little.
    ours_cpu = {dict(lbl)["domain"]: v for (n, lbl), v in Samples.parse(ours_text).values.items()
                if n == "libvirt_domain_cpu_seconds_total" and dict(lbl).get("domain") in domains}
    for (name, labels), before in go1.items():
        if name == "libvirt_domain_info_cpu_time_seconds_total":
            domain = dict(labels)["domain"]
            after = go2[(name, labels)]
            slack = max(0.15, 0.03 * after)
            assert before - slack <= ours_cpu[domain] <= after + slack, (domain, before, ours_cpu[domain], after)
