"""The fleet guide's Prometheus example (contrib/prometheus/): promtool accepts it as shipped, and
with its paths pointed at this repository (the shipped rules, the example file_sd targets) it loads
them without a warning."""

from __future__ import annotations

from pathlib import Path

import yaml

from promtool import promtool

from .conftest import REPO

CONFIG = REPO / "contrib/prometheus/prometheus.yml"
TARGETS = REPO / "contrib/prometheus/virt-exporter-targets.yml"


def test_the_example_config_is_valid_as_shipped():
    promtool("check", "config", CONFIG)


def test_with_the_shipped_rules_and_targets_it_loads_without_a_warning(tmp_path: Path):
    config = yaml.safe_load(CONFIG.read_text())
    config["rule_files"] = [str(REPO / "alerts" / "*.rules.yml")]
    config["scrape_configs"][0]["file_sd_configs"][0]["files"] = [str(TARGETS)]
    copy = tmp_path / "prometheus.yml"
    copy.write_text(yaml.safe_dump(config))
    out = promtool("check", "config", copy)
    text = out.stdout + out.stderr
    assert "WARNING" not in text and "SUCCESS" in text, text
    assert len(list((REPO / "alerts").glob("*.rules.yml"))) >= 3  # the rules promtool just checked
    targets = yaml.safe_load(TARGETS.read_text())
    assert all(t.endswith(":9177") for group in targets for t in group["targets"])
