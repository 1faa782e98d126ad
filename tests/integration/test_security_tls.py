"""TLS and basic auth with an exporter-toolkit web-config file, end to end (issue 8, "Done when"): the
real exporter with a self-signed certificate and a bcrypt password — right password 200, wrong 401,
plain HTTP to the TLS port refused — checked with curl and with a real Prometheus scraping it with the
same credentials; no secret in the exporter's log.
"""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Dict, Iterator, Tuple

import bcrypt
import pytest

from bounds import wait_for
from childproc import Process
from exporterproc import ExporterProcess, free_port

TEST_BOUND_S = 120
pytestmark = pytest.mark.timeout(TEST_BOUND_S, func_only=True)
USER = "prometheus"
PASSWORD = "c0rrect-h0rse-battery"
WRONG = "tr0ub4dor-and-3"
PROMETHEUS = "/usr/bin/prometheus"
CURL_TIMEOUT_S = 10


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Dict[str, Path]:
    d = tmp_path_factory.mktemp("pki")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
                    "-out", str(cert), "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                   check=True, capture_output=True, timeout=60)
    return {"cert": cert, "key": key}


@pytest.fixture(scope="module")
def password_hash() -> str:
    return bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=8)).decode()


@pytest.fixture(scope="module")
def web_config(tmp_path_factory, pki, password_hash) -> Path:
    path = tmp_path_factory.mktemp("webcfg") / "web-config.yml"
    # The file an operator already has for node_exporter.
    path.write_text(f"""tls_server_config:
  cert_file: {pki['cert']}
  key_file: {pki['key']}
basic_auth_users:
  {USER}: {password_hash}
""")
    return path


class TLSExporter(ExporterProcess):
    """The real exporter behind TLS + basic auth; ready once a TLS request gets an HTTP answer."""

    def __init__(self, args, ca: Path, **kw) -> None:
        super().__init__(args, **kw)
        self.ssl_context = ssl.create_default_context(cafile=str(ca))

    @property
    def url(self) -> str:
        return "https://127.0.0.1:%d" % self.port

    def ready(self) -> bool:
        self.get("/-/healthy", timeout_s=2)  # any status: the web config may ask for credentials
        return True


def curl(url: str, *args: str) -> Tuple[int, str, str]:
    """(curl exit code, HTTP status as curl reports it, body)."""
    with tempfile.NamedTemporaryFile() as body:
        p = subprocess.run(["curl", "-sS", "--max-time", str(CURL_TIMEOUT_S), "-o", body.name,
                            "-w", "%{http_code}", *args, url],
                           capture_output=True, text=True, timeout=CURL_TIMEOUT_S + 5)
        return p.returncode, p.stdout.strip(), Path(body.name).read_text(errors="replace")


@pytest.fixture(scope="module")
def exporter(libvirtd, web_config, pki) -> Iterator[TLSExporter]:
    with TLSExporter(["--web.config.file", str(web_config)], ca=pki["cert"]) as exp:
        yield exp


def test_curl_right_password_wrong_password_plain_http(exporter: TLSExporter, pki) -> None:
    url = "https://127.0.0.1:%d/metrics" % exporter.port
    rc, code, body = curl(url, "--cacert", str(pki["cert"]), "-u", "%s:%s" % (USER, PASSWORD))
    assert (rc, code) == (0, "200") and "libvirt_up" in body, (rc, code, body[:300])
    rc, code, _ = curl(url, "--cacert", str(pki["cert"]), "-u", "%s:%s" % (USER, WRONG))
    assert (rc, code) == (0, "401")
    rc, code, _ = curl(url, "--cacert", str(pki["cert"]), "-u", "nobody:%s" % PASSWORD)
    assert (rc, code) == (0, "401")
    rc, code, _ = curl(url, "--cacert", str(pki["cert"]))
    assert (rc, code) == (0, "401")
    # Plain HTTP to the TLS port: no HTTP answer at all (the handshake fails, the connection closes).
    rc, code, body = curl("http://127.0.0.1:%d/metrics" % exporter.port, "-u", "%s:%s" % (USER, PASSWORD))
    assert rc != 0 and code == "000" and not body, (rc, code, body[:200])
    # The self-signed certificate is not trusted without its CA.
    rc, code, _ = curl(url, "-u", "%s:%s" % (USER, PASSWORD))
    assert rc == 60 and code == "000"
    # The server is still fine after all that.
    rc, code, _ = curl("https://localhost:%d/-/healthy" % exporter.port, "--cacert", str(pki["cert"]),
                       "-u", "%s:%s" % (USER, PASSWORD))
    assert (rc, code) == (0, "200")


def test_no_secret_in_the_log(exporter: TLSExporter, pki, password_hash) -> None:
    url = "https://127.0.0.1:%d/metrics" % exporter.port
    for user, pw in ((USER, PASSWORD), (USER, WRONG), (PASSWORD, WRONG)):
        curl(url, "--cacert", str(pki["cert"]), "-u", "%s:%s" % (user, pw))
    log = exporter.log()
    assert log, "empty log"
    for secret in (PASSWORD, WRONG, password_hash, password_hash[7:29]):
        assert secret not in log, "a secret in the exporter's log"
    assert "Authorization" not in log and "Basic " not in log


@pytest.mark.skipif(not os.access(PROMETHEUS, os.X_OK), reason="prometheus not installed")
def test_prometheus_scrapes_with_the_same_credentials(exporter: TLSExporter, pki, tmp_path) -> None:
    target = "127.0.0.1:%d" % exporter.port
    port = free_port()
    config = tmp_path / "prometheus.yml"
    jobs = []
    for job, password in (("right", PASSWORD), ("wrong", WRONG)):
        jobs.append(f"""  - job_name: {job}
    scheme: https
    tls_config:
      ca_file: {pki['cert']}
    basic_auth:
      username: {USER}
      password: {password}
    static_configs:
      - targets: ['{target}']""")
    jobs.append(f"""  - job_name: plain
    scheme: http
    basic_auth:
      username: {USER}
      password: {PASSWORD}
    static_configs:
      - targets: ['{target}']""")
    config.write_text("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n"
                      + "\n".join(jobs) + "\n")
    prometheus = Process("prometheus", [PROMETHEUS, "--config.file", str(config), "--storage.tsdb.path",
                                        str(tmp_path / "tsdb"), "--web.listen-address", "127.0.0.1:%d" % port,
                                        "--log.level", "warn"],
                         tmp_path / "prometheus.log", "http://127.0.0.1:%d/-/ready" % port).start(60)
    try:
        api = "http://127.0.0.1:%d/api/v1" % port
        health: Dict[str, Tuple[str, str]] = {}

        def settled() -> bool:
            with urllib.request.urlopen(api + "/targets", timeout=5) as r:
                data = json.load(r)["data"]["activeTargets"]
            health.clear()
            health.update({t["labels"]["job"]: (t["health"], t.get("lastError", "")) for t in data})
            return health.get("right", ("",))[0] == "up" and all(health.get(j, ("unknown",))[0] == "down"
                                                                 for j in ("wrong", "plain"))

        wait_for(settled, 60, "Prometheus's verdict on the three jobs", 0.5, detail=lambda: health)
        assert health.get("right", ("",))[0] == "up", health
        assert health["wrong"][0] == "down" and "401" in health["wrong"][1], health
        assert health["plain"][0] == "down", health
        query = urllib.parse.urlencode({"query": 'libvirt_up{job="right"}'})
        with urllib.request.urlopen(api + "/query?" + query, timeout=5) as r:
            result = json.load(r)["data"]["result"]
        assert result and result[0]["metric"]["instance"] == target
    finally:
        prometheus.stop()
