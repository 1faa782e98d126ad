"""The README's metric and flag tables are generated from the code; this fails when they are stale."""

from pathlib import Path

from virt_exporter import catalogue

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_tables_are_current():
    text = README.read_text(encoding="utf-8")
    assert catalogue.updated_readme(text) == text, \
        "README tables are stale: run .venv/bin/python -m virt_exporter.catalogue --update README.md"


def test_readme_lists_every_metric_of_the_contract():
    # metrics.md is the contract between exporter, dashboards and alerts.
    text = README.read_text(encoding="utf-8")
    for name in ("libvirt_up", "libvirt_domain_cpu_seconds_total", "libvirt_domain_block_read_bytes_total",
                 "libvirt_domain_interface_receive_bytes_total", "libvirt_exporter_domain_unresponsive",
                 "libvirt_perfmon_alarms_total"):
        assert "`%s`" % name in text, name
