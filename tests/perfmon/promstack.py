"""A real Prometheus + Alertmanager + webhook receiver on 127.0.0.1, for the perfmon end-to-end tests;
HA pairs of Prometheus replicas, and a scrape proxy that fails chosen scrapes.

Every listener is on 127.0.0.1 with an ephemeral port, all storage lives in the caller's tmp dir, and
each process is stopped by its own pid (SIGTERM, then SIGKILL) — never by name.
"""

from __future__ import annotations

import dataclasses
import http.server
import json
import shutil
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, TypeVar

import yaml

from childproc import Process
from exporterproc import free_port
from scrape import keys

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "alerts" / "optional" / "perfmon.rules.yml"
ALERTMANAGER_CONFIG = REPO / "alerts" / "alertmanager.yml"
SHIPPED_WEBHOOK_URL = "http://127.0.0.1:9099/perfmon"
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
ALERTMANAGER = (shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
                or "/usr/bin/prometheus-alertmanager")


def http_get(url: str, timeout_s: float = 5.0) -> Any:
    """GET ``url``; the decoded JSON body, or the text when it is not JSON."""
    with urllib.request.urlopen(url, timeout=timeout_s) as r:
        body = r.read().decode()
    try:
        return json.loads(body)
    except ValueError:
        return body


class Diagnostics:
    """What each stage saw, for a failure message; a part that cannot be read says why, and never
    hides the failure being reported."""

    def __init__(self) -> None:
        self.parts: List[str] = []

    def part(self, title: str, fn: Callable[[], object]) -> None:
        try:
            self.parts.append("--- %s ---\n%s" % (title, fn()))
        except Exception as e:  # noqa: BLE001 - a diagnostic must not hide the failure
            self.parts.append("--- %s --- (unavailable: %s)" % (title, e))

    def __str__(self) -> str:
        return "\n".join(self.parts)


Server = TypeVar("Server", bound="LoopbackServer")


class LoopbackServer:
    """An HTTP server on 127.0.0.1 (ephemeral port) in a daemon thread, as a context manager."""

    def _listen(self, handler: type, thread_name: str) -> None:
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name=thread_name, daemon=True)

    @property
    def address(self) -> str:
        return "127.0.0.1:%d" % self._server.server_address[1]

    def __enter__(self: Server) -> Server:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


# --- the webhook receiver -------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Notification:
    received_s: float        # wall clock (time.time()) when the POST arrived
    path: str
    payload: Dict[str, Any]  # Alertmanager's webhook body (version 4)

    @property
    def alerts(self) -> List[Dict[str, Any]]:
        return list(self.payload.get("alerts") or [])


class WebhookReceiver(LoopbackServer):
    """Records every POST (Alertmanager's webhook notifications) with its receive time."""

    def __init__(self) -> None:
        self.notifications: List[Notification] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                received_s = time.time()
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                try:
                    payload = json.loads(body)
                except ValueError:
                    payload = {"unparsable": body.decode(errors="replace")}
                with receiver._lock:
                    receiver.notifications.append(Notification(received_s, self.path, payload))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self._listen(Handler, "webhook")

    @property
    def url(self) -> str:
        return "http://%s/perfmon" % self.address

    def received(self) -> List[Notification]:
        with self._lock:
            return list(self.notifications)


# --- processes ------------------------------------------------------------------------------------

def alertmanager_config(webhook_url: str) -> str:
    """The shipped alerts/alertmanager.yml with only the webhook URL replaced (timings untouched)."""
    text = ALERTMANAGER_CONFIG.read_text()
    if text.count(SHIPPED_WEBHOOK_URL) != 1:
        raise AssertionError("alerts/alertmanager.yml no longer has exactly one %s" % SHIPPED_WEBHOOK_URL)
    return text.replace(SHIPPED_WEBHOOK_URL, webhook_url)


def start_alertmanager(workdir: Path, webhook_url: str) -> Process:
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "alertmanager.yml"
    config.write_text(alertmanager_config(webhook_url))
    port = free_port()
    argv = [ALERTMANAGER, "--config.file=%s" % config, "--storage.path=%s" % (workdir / "data"),
            "--web.listen-address=127.0.0.1:%d" % port,
            "--cluster.listen-address=",  # no gossip listener (it would bind *:9094)
            "--log.level=debug"]
    return Process("alertmanager", argv, workdir / "alertmanager.log", "http://127.0.0.1:%d/-/ready" % port).start()


def prometheus_config(exporter_address: str, alertmanager_address: Optional[str], interval_s: int = 5,
                      rule_files: Optional[List[Path]] = None, replica: Optional[str] = None) -> Dict[str, Any]:
    """Scrape the exporter every ``interval_s`` and evaluate the rules as often, alert to the
    Alertmanager (if any). The rules are the shipped perfmon file, verbatim, unless ``rule_files`` says
    otherwise. A ``replica`` is one of an HA pair, configured as such a pair usually is: an external
    label naming the replica, dropped from the alerts it sends (alert_relabel_configs) so both replicas
    send the same alerts. It also names itself in the scrape URL (``?replica=``) for a ScrapeProxy."""
    config: Dict[str, Any] = {
        "global": {"scrape_interval": "%ds" % interval_s, "scrape_timeout": "%ds" % min(interval_s, 10),
                   "evaluation_interval": "%ds" % interval_s},
        "rule_files": [str(p) for p in (rule_files or [RULES])],
        "scrape_configs": [{"job_name": "virt-exporter", "static_configs": [{"targets": [exporter_address]}]}],
    }
    if replica is not None:
        config["global"]["external_labels"] = {"replica": replica}
        config["scrape_configs"][0]["params"] = {"replica": [replica]}
    if alertmanager_address:
        config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [alertmanager_address]}]}]}
        if replica is not None:
            config["alerting"]["alert_relabel_configs"] = [{"action": "labeldrop", "regex": "replica"}]
    return config


def start_prometheus(workdir: Path, exporter_address: str, alertmanager_address: Optional[str],
                     interval_s: int = 5, rule_files: Optional[List[Path]] = None,
                     replica: Optional[str] = None) -> Process:
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "prometheus.yml"
    config.write_text(yaml.safe_dump(prometheus_config(exporter_address, alertmanager_address, interval_s,
                                                       rule_files, replica), sort_keys=False))
    port = free_port()
    argv = [PROMETHEUS, "--config.file=%s" % config, "--storage.tsdb.path=%s" % (workdir / "data"),
            "--web.listen-address=127.0.0.1:%d" % port, "--log.level=debug"]
    return Process("prometheus", argv, workdir / "prometheus.log", "http://127.0.0.1:%d/-/ready" % port).start()


def address(process: Process) -> str:
    """host:port a process listens on."""
    return process.ready_url.split("//")[1].split("/")[0]


def base_url(process: Process) -> str:
    return process.ready_url.rsplit("/-/ready", 1)[0]


def query(prometheus: Process, expr: str) -> List[Dict[str, Any]]:
    """An instant query's result vector."""
    out = http_get(base_url(prometheus) + "/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
    return out["data"]["result"]


def active_alerts(prometheus: Process, alertname: str) -> List[Dict[str, Any]]:
    """The replica's pending and firing alerts of ``alertname`` (its rule manager's view)."""
    alerts = http_get(base_url(prometheus) + "/api/v1/alerts")["data"]["alerts"]
    return [a for a in alerts if a["labels"].get("alertname") == alertname]


def alertmanager_active(am: Process, alertname: str) -> List[Dict[str, Any]]:
    """The Alertmanager's alerts of ``alertname`` that are not resolved."""
    url = base_url(am) + "/api/v2/alerts?" + urllib.parse.urlencode({"filter": 'alertname="%s"' % alertname})
    return list(http_get(url))


# --- fault injection ------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Scrape:
    received_s: float
    replica: str
    alarms: frozenset  # (object, domain, variable, alarm_time) of each libvirt_perfmon_alarm_value series
    failed: bool


def alarm_identities(exposition: str, content_type: str) -> frozenset:
    """(object, domain, variable, alarm_time) of every alarm series in an exposition (in the format
    its Content-Type names: Prometheus asks for OpenMetrics)."""
    series = keys(exposition, openmetrics=content_type.startswith("application/openmetrics-text"))
    return frozenset((labels["object"], labels["domain"], labels["variable"], labels["alarm_time"])
                     for labels in (dict(lb) for name, lb in series if name == "libvirt_perfmon_alarm_value"))


class ScrapeProxy(LoopbackServer):
    """Between Prometheus replicas and the exporter, on 127.0.0.1: forwards every scrape (the replica
    names itself with ``?replica=``), except that it answers 503 — a failed scrape, for which
    Prometheus marks every series of the target stale — to the n-th scrape of a replica whose body
    carries alarm series, n = ``fail_nth_alarm_scrape[replica]``. Records every scrape."""

    def __init__(self, exporter_url: str, fail_nth_alarm_scrape: Mapping[str, int]) -> None:
        self.scrapes: List[Scrape] = []
        self._lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                received_s = time.time()
                parts = urllib.parse.urlsplit(self.path)
                replica = urllib.parse.parse_qs(parts.query).get("replica", ["?"])[0]
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() in ("accept", "x-prometheus-scrape-timeout-seconds")}
                req = urllib.request.Request(exporter_url + parts.path, headers=headers)
                try:
                    with urllib.request.urlopen(req, timeout=30) as r:
                        status, ctype, body = r.status, r.headers.get("Content-Type", "text/plain"), r.read()
                except OSError as e:
                    status, ctype, body = 502, "text/plain", str(e).encode()
                alarms = alarm_identities(body.decode(errors="replace"), ctype) if status == 200 else frozenset()
                with proxy._lock:
                    n = sum(1 for s in proxy.scrapes if s.replica == replica and s.alarms) + 1
                    failed = bool(alarms) and n == fail_nth_alarm_scrape.get(replica)
                    proxy.scrapes.append(Scrape(received_s, replica, alarms, failed))
                if failed:
                    status, ctype, body = 503, "text/plain", b"failed on purpose by the test's scrape proxy\n"
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self._listen(Handler, "scrape-proxy")

    def of(self, replica: str) -> List[Scrape]:
        with self._lock:
            return [s for s in self.scrapes if s.replica == replica]
