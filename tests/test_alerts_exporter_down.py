"""VirtExporterDown in a real Prometheus: quiet while the exporter answers, firing for its target once it
is stopped; a second job whose target is down never raises it. The rules are the generator's, with only
the `for` shortened (a knob) so the test takes seconds rather than five minutes."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Dict, List

import pytest
import yaml

from bounds import wait_for
from childproc import Process
from exporterproc import ExporterProcess, free_port
from perfmon.promstack import PROMETHEUS, http_get, query
from virt_exporter.mixin.config import parse_config
from virt_exporter.mixin.rules import rule_files

pytestmark = [pytest.mark.libvirt, pytest.mark.prometheus, pytest.mark.timeout(180, func_only=True)]

FOR_S = 5


def start_prometheus(workdir: Path, exporter: str, dead: str) -> Process:
    rules = workdir / "exporter.rules.yml"
    cfg = parse_config({"for": {"VirtExporterDown": "%ds" % FOR_S}})
    rules.write_text(rule_files(cfg)["exporter.rules.yml"])
    config = {"global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
              "rule_files": [str(rules)],
              "scrape_configs": [{"job_name": "virt-exporter", "static_configs": [{"targets": [exporter]}]},
                                 {"job_name": "other", "static_configs": [{"targets": [dead]}]}]}
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
    url = "http://127.0.0.1:%d" % free_port()
    return Process("prometheus", [PROMETHEUS, "--config.file=%s" % (workdir / "prometheus.yml"),
                                  "--storage.tsdb.path=%s" % (workdir / "data"),
                                  "--web.listen-address=%s" % url[len("http://"):]],
                   workdir / "prometheus.log", url + "/-/ready").start()


def down_alerts(prom: Process) -> List[Dict[str, Any]]:
    url = prom.ready_url.rsplit("/-/ready", 1)[0]
    alerts = http_get(url + "/api/v1/alerts")["data"]["alerts"]
    return [a for a in alerts if a["labels"]["alertname"] == "VirtExporterDown"]


def test_virt_exporter_down_fires_for_a_stopped_exporter_and_not_for_another_job(libvirtd, tmp_path: Path):
    exporter = ExporterProcess().start()
    target = "127.0.0.1:%d" % exporter.port
    dead = "127.0.0.1:%d" % free_port()  # nothing listens: the other job's target is down all along
    prom = start_prometheus(tmp_path, target, dead)
    try:
        wait_for(lambda: query(prom, 'up{job="virt-exporter"} == 1'), 30, "the exporter scraped")
        wait_for(lambda: query(prom, 'up{job="other"} == 0'), 30, "the other job's failed scrape")
        time.sleep(FOR_S + 3)  # longer than the `for`: a wrongly scoped rule would be firing by now
        assert down_alerts(prom) == [], "VirtExporterDown while the exporter answers"

        exporter.stop()
        stopped = time.monotonic()
        firing = wait_for(lambda: [a for a in down_alerts(prom) if a["state"] == "firing"], 60,
                          "VirtExporterDown firing")
        print("VirtExporterDown firing %.1f s after the exporter stopped (for: %d s)" % (
            time.monotonic() - stopped, FOR_S))
        assert [(a["labels"]["instance"], a["labels"]["job"], a["labels"]["severity"]) for a in firing] == [
            (target, "virt-exporter", "critical")]
        assert time.monotonic() - stopped >= FOR_S
        assert not [a for a in down_alerts(prom) if a["labels"].get("job") == "other"]
    finally:
        prom.stop()
        exporter.__exit__(None, None, None)
