"""alerts/alertmanager.yml: amtool accepts it and routes each severity (and PerfmonAlarm) to its
receiver; a real Alertmanager on 127.0.0.1 with the shipped file (only the placeholder webhook
addresses pointed at a local receiver) inhibits exactly what the inhibit rules say and delivers
everything else, alerts without a severity included, to the receiver of its route."""

from __future__ import annotations

import datetime
import json
import shutil
import subprocess
import urllib.request
from pathlib import Path
from typing import Dict, List, Optional, Set, Tuple

import pytest
import yaml

from bounds import wait_for
from childproc import Process
from exporterproc import free_port
from perfmon.promstack import ALERTMANAGER, WebhookReceiver, http_get

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "alerts" / "alertmanager.yml"
PLACEHOLDERS = ("http://127.0.0.1:9098", "http://127.0.0.1:9099")

pytestmark = pytest.mark.prometheus


def amtool(*args: str) -> subprocess.CompletedProcess:
    path = shutil.which("amtool")
    assert path, "amtool not found: scripts/setup.sh installs it (Debian package prometheus-alertmanager)"
    return subprocess.run([path, *args], capture_output=True, text=True, timeout=60)


def test_amtool_check_config():
    p = amtool("check-config", str(CONFIG))
    assert p.returncode == 0 and "SUCCESS" in p.stdout, p.stdout + p.stderr
    assert "3 inhibit rules" in p.stdout


def test_every_receiver_delivers_somewhere():
    doc = yaml.safe_load(CONFIG.read_text())
    for receiver in doc["receivers"]:
        assert receiver.get("webhook_configs"), "receiver %s has no integration: its alerts are dropped" % receiver
    assert doc["route"]["receiver"] in {r["name"] for r in doc["receivers"]}


ROUTES = [
    ("perfmon", ["alertname=PerfmonAlarm", "severity=critical", "object=vm", "variable=cpu_usage"]),
    ("perfmon", ["alertname=PerfmonAlarm", "severity=info"]),
    ("virt-page", ["alertname=LibvirtDown", "severity=critical", "instance=kvm-07"]),
    ("virt-ticket", ["alertname=LibvirtDomainVcpuSteal", "severity=warning", "domain=web1"]),
    ("virt-digest", ["alertname=LibvirtHostUnderloaded", "severity=info"]),
    ("virt-default", ["alertname=SomethingElse"]),
    ("virt-default", ["alertname=SomethingElse", "severity=major"]),
]


@pytest.mark.parametrize("receiver,labels", ROUTES, ids=["%s:%s" % (r, labels[-1]) for r, labels in ROUTES])
def test_amtool_routes(receiver: str, labels: List[str]):
    p = amtool("config", "routes", "test", "--config.file=%s" % CONFIG, "--verify.receivers=%s" % receiver, *labels)
    assert p.returncode == 0 and p.stdout.strip() == receiver, p.stdout + p.stderr


# --- a real Alertmanager ----------------------------------------------------------------------------

def _alert(name: str, **labels: str) -> dict:
    return {"labels": dict(labels, alertname=name, job="virt-exporter"), "annotations": {"summary": name}}


def _posted(alerts: List[dict]) -> List[dict]:
    """The alerts as posted now: stamped when the test runs, not when the module was imported (a long
    suite would otherwise post alerts whose endsAt is past, which Alertmanager takes as resolved)."""
    now = datetime.datetime.now(datetime.timezone.utc)
    return [dict(a, startsAt=now.isoformat(), endsAt=(now + datetime.timedelta(minutes=10)).isoformat())
            for a in alerts]


# (alert, inhibited?, receiver path when delivered)
CASES: List[Tuple[dict, bool, str]] = [
    # libvirtd down on h1: its domain alerts are silenced, its host alerts and other hosts' are not
    (_alert("LibvirtDown", instance="h1", severity="critical"), False, "/page"),
    (_alert("LibvirtDomainVcpuSteal", instance="h1", domain="d1", severity="warning"), True, ""),
    (_alert("LibvirtHostCpuOverload", instance="h1", severity="warning"), False, "/ticket"),
    (_alert("LibvirtDomainVcpuSteal", instance="h2", domain="d1", severity="warning"), False, "/ticket"),
    # the exporter down on h3: even a critical domain alert there is silenced
    (_alert("VirtExporterDown", instance="h3", severity="critical"), False, "/page"),
    (_alert("LibvirtVolumeHeadroomLow", instance="h3", domain="d3", target="vda", severity="critical"), True, ""),
    # critical on h4's d4/vda silences the warning of that disk, not of another disk
    (_alert("LibvirtVolumeHeadroomLow", instance="h4", domain="d4", target="vda", severity="critical"), False, "/page"),
    (_alert("LibvirtVolumeExtensionNeeded", instance="h4", domain="d4", target="vda", severity="warning"), True, ""),
    (_alert("LibvirtDiskAllocationNearCapacity", instance="h4", domain="d4", target="vdb", severity="warning"),
     False, "/ticket"),
    # ENOSPC silences the pause it caused
    (_alert("LibvirtDiskNoSpace", instance="h5", domain="d5", target="vda", severity="critical"), False, "/page"),
    (_alert("LibvirtDomainPausedOnIOError", instance="h5", domain="d5", severity="critical"), True, ""),
    # perfmon alarms of one domain never silence each other
    (_alert("PerfmonAlarm", instance="h6", object="vm", domain="d6", variable="cpu_usage", priority="1",
            severity="critical"), False, "/perfmon"),
    (_alert("PerfmonAlarm", instance="h6", object="vm", domain="d6", variable="memory_internal_free",
            priority="3", severity="warning"), False, "/perfmon"),
    (_alert("LibvirtHostUnderloaded", instance="h7", severity="info"), False, "/digest"),
    # no severity at all: the default receiver delivers it
    (_alert("SomethingElse", instance="h8"), False, "/default"),
]


def _key(labels: Dict[str, str]) -> Tuple[str, str, str, str]:
    return labels["alertname"], labels["instance"], labels.get("domain", ""), labels.get("variable", "")


def test_a_real_alertmanager_inhibits_what_the_rules_say_and_delivers_the_rest(tmp_path: Path):
    with WebhookReceiver() as receiver:
        base = receiver.url.rsplit("/", 1)[0]
        text = CONFIG.read_text()
        for placeholder in PLACEHOLDERS:
            assert placeholder in text
            text = text.replace(placeholder, base)
        (tmp_path / "alertmanager.yml").write_text(text)
        url = "http://127.0.0.1:%d" % free_port()
        am = Process("alertmanager", [ALERTMANAGER, "--config.file=%s" % (tmp_path / "alertmanager.yml"),
                                      "--storage.path=%s" % (tmp_path / "data"),
                                      "--web.listen-address=%s" % url[len("http://"):],
                                      "--cluster.listen-address="],
                     tmp_path / "alertmanager.log", url + "/-/ready").start()
        try:
            body = json.dumps(_posted([c[0] for c in CASES])).encode()
            req = urllib.request.Request(url + "/api/v2/alerts", data=body,
                                         headers={"Content-Type": "application/json"}, method="POST")
            with urllib.request.urlopen(req, timeout=10) as r:
                assert r.status == 200
            def listed() -> Dict[Tuple[str, str, str, str], dict]:
                return {_key(a["labels"]): a["status"] for a in http_get(url + "/api/v2/alerts")}

            def all_listed() -> Optional[Dict[Tuple[str, str, str, str], dict]]:
                state = listed()
                return state if len(state) == len(CASES) else None

            state = wait_for(all_listed, 20, "Alertmanager listing the %d alerts posted" % len(CASES), 0.5,
                             detail=lambda: (sorted(listed()), am.log_tail()))
            for alert, inhibited, _path in CASES:
                status = state[_key(alert["labels"])]
                assert (status["state"] == "suppressed" and bool(status["inhibitedBy"])) == inhibited, \
                    (alert["labels"], status)

            expected: Set[Tuple[str, Tuple[str, str, str, str]]] = {
                (path, _key(alert["labels"])) for alert, inhibited, path in CASES if not inhibited}
            def delivered() -> Set[Tuple[str, Tuple[str, str, str, str]]]:
                return {(n.path, _key(a["labels"])) for n in receiver.received() for a in n.alerts}

            # the severity routes wait group_wait (30 s) before the first flush
            wait_for(lambda: delivered() == expected, 90, "the notifications of the alerts not inhibited", 1,
                     detail=lambda: (sorted(delivered() ^ expected), am.log_tail()))
        finally:
            am.stop()
