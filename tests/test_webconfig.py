"""--web.config.file: validation, TLS context, basic auth; end to end with curl against the exporter's own
HTTP server (virt_exporter/server.py): TLS, client certificates, max_version, basic auth, extra headers,
the rate limit's 429 and its refill (on a fake clock)."""

from __future__ import annotations

import base64
import shutil
import ssl
import subprocess
import threading
from pathlib import Path

import bcrypt
import pytest
from prometheus_client.core import GaugeMetricFamily

from exporterproc import free_port
from virt_exporter import webconfig
from virt_exporter.server import ExporterHTTPServer
from virt_exporter.webconfig import WebConfigError, load_web_config
from virt_exporter.webconfig.ratelimit import TokenBucket

PASSWORD = "s3cret-scrape-pw"
BCRYPT_COST = 4  # the minimum: keeps the suite fast, the code path is the same
CURL_TIMEOUT_S = 10


def _openssl_pair(directory: Path, name: str, cn: str = "127.0.0.1") -> tuple:
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "1", "-subj", f"/CN={cn}", "-addext", f"subjectAltName=IP:{cn}",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=30,
    )
    return cert, key


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> dict:
    """Self-signed server pair, a second unrelated pair, and a self-signed client pair."""
    d = tmp_path_factory.mktemp("pki")
    server_cert, server_key = _openssl_pair(d, "server")
    _, other_key = _openssl_pair(d, "other")
    client_cert, client_key = _openssl_pair(d, "client", cn="127.0.0.2")
    return {"dir": d, "cert": server_cert, "key": server_key, "other_key": other_key,
            "client_cert": client_cert, "client_key": client_key}


@pytest.fixture(scope="module")
def password_hash() -> str:
    return bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=BCRYPT_COST)).decode()


def _write(directory: Path, text: str, name: str = "web.yml") -> str:
    path = directory / name
    path.write_text(text)
    return str(path)


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def _load_error(path: str) -> str:
    with pytest.raises(WebConfigError) as info:
        load_web_config(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"web config {path}: ")
    return message


# --- loading -----------------------------------------------------------------------------------------


def test_good_config_loads_with_tls_auth_and_headers(tmp_path, pki, password_hash):
    path = _write(tmp_path, f"""
tls_server_config:
  cert_file: {pki['cert']}
  key_file: {pki['key']}
  min_version: TLS13
http_server_config:
  http2: false
  headers:
    X-Frame-Options: deny
    Strict-Transport-Security: max-age=31536000
basic_auth_users:
  prometheus: {password_hash}
""")
    cfg = load_web_config(path)
    ctx = cfg.ssl_context()
    assert isinstance(ctx, ssl.SSLContext)
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_3
    assert ctx.maximum_version == ssl.TLSVersion.TLSv1_3
    assert ctx.verify_mode == ssl.CERT_NONE
    assert cfg.auth_required
    assert cfg.extra_headers == {"X-Frame-Options": "deny", "Strict-Transport-Security": "max-age=31536000"}


def test_empty_file_means_no_tls_and_no_auth(tmp_path):
    cfg = load_web_config(_write(tmp_path, ""))
    assert cfg.ssl_context() is None
    assert not cfg.auth_required
    assert cfg.check_basic_auth(None)
    assert cfg.extra_headers == {}


def test_auth_only_config_has_no_ssl_context(tmp_path, password_hash):
    cfg = load_web_config(_write(tmp_path, f"basic_auth_users:\n  prometheus: '{password_hash}'\n"))
    assert cfg.ssl_context() is None
    assert cfg.auth_required


def test_relative_paths_are_relative_to_the_config_directory(tmp_path, pki, monkeypatch):
    conf_dir = tmp_path / "etc"
    (conf_dir / "tls").mkdir(parents=True)
    shutil.copy(pki["cert"], conf_dir / "tls" / "c.pem")
    shutil.copy(pki["key"], conf_dir / "tls" / "k.pem")
    path = _write(conf_dir, "tls_server_config:\n  cert_file: tls/c.pem\n  key_file: tls/k.pem\n")
    monkeypatch.chdir(tmp_path)  # a cwd where tls/c.pem does not exist
    assert load_web_config(path).ssl_context() is not None


def test_inline_cert_and_key_load(tmp_path, pki):
    def indent(p: Path) -> str:
        return "".join("    " + line + "\n" for line in p.read_text().splitlines())

    path = _write(tmp_path, "tls_server_config:\n  cert: |\n" + indent(pki["cert"])
                  + "  key: |\n" + indent(pki["key"]))
    assert load_web_config(path).ssl_context() is not None


@pytest.mark.parametrize("auth_type, verify_mode", [
    ("NoClientCert", ssl.CERT_NONE),
    ("RequestClientCert", ssl.CERT_NONE),
    ("RequireAnyClientCert", ssl.CERT_REQUIRED),
    ("RequireClientCert", ssl.CERT_REQUIRED),  # exporter-toolkit's old spelling
    ("VerifyClientCertIfGiven", ssl.CERT_OPTIONAL),
    ("RequireAndVerifyClientCert", ssl.CERT_REQUIRED),
])
def test_client_auth_type_maps_to_verify_mode(tmp_path, pki, auth_type, verify_mode):
    ca_line = "" if verify_mode == ssl.CERT_NONE else f"  client_ca_file: {pki['client_cert']}\n"
    path = _write(tmp_path, f"tls_server_config:\n  cert_file: {pki['cert']}\n  key_file: {pki['key']}\n"
                            f"  client_auth_type: {auth_type}\n{ca_line}")
    assert load_web_config(path).ssl_context().verify_mode == verify_mode


def test_cipher_suites_and_server_preference_are_applied(tmp_path, pki):
    path = _write(tmp_path, f"""
tls_server_config:
  cert_file: {pki['cert']}
  key_file: {pki['key']}
  cipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, TLS_AES_128_GCM_SHA256]
  prefer_server_cipher_suites: false
  curve_preferences: [CurveP384]
""")
    ctx = load_web_config(path).ssl_context()
    tls12_names = {c["name"] for c in ctx.get_ciphers() if c["protocol"] == "TLSv1.2"}
    assert tls12_names == {"ECDHE-ECDSA-AES128-GCM-SHA256"}
    assert not ctx.options & ssl.OP_CIPHER_SERVER_PREFERENCE


# --- rejected configs: one line, the file name, no secret ------------------------------------------------


def test_missing_config_file(tmp_path):
    assert "no such file" in _load_error(str(tmp_path / "absent.yml"))


def test_missing_cert_file_names_the_resolved_path(tmp_path, pki):
    path = _write(tmp_path, f"tls_server_config:\n  cert_file: nope.pem\n  key_file: {pki['key']}\n")
    message = _load_error(path)
    assert f"tls_server_config.cert_file: no such file {tmp_path / 'nope.pem'}" in message


def test_bad_yaml_reports_position_without_the_line(tmp_path, password_hash):
    path = _write(tmp_path, f"basic_auth_users:\n  prometheus: '{password_hash}\n  other: [\n")
    message = _load_error(path)
    assert "invalid YAML" in message
    assert password_hash not in message and password_hash[7:20] not in message


def test_plain_text_password_is_rejected_without_echoing_it(tmp_path):
    path = _write(tmp_path, f"basic_auth_users:\n  prometheus: {PASSWORD}\n")
    message = _load_error(path)
    assert "basic_auth_users.prometheus: value is not a bcrypt hash" in message
    assert "plain-text" in message
    assert PASSWORD not in message


def test_unknown_top_level_key_is_rejected(tmp_path):
    message = _load_error(_write(tmp_path, "tls_config:\n  cert_file: x\n"))
    assert "top level: unknown field 'tls_config'" in message


def test_unknown_nested_key_is_rejected(tmp_path, pki):
    path = _write(tmp_path, f"tls_server_config:\n  cert_file: {pki['cert']}\n  key_file: {pki['key']}\n"
                            "  client_auth: RequireAndVerifyClientCert\n")
    assert "tls_server_config: unknown field 'client_auth'" in _load_error(path)


def test_duplicate_key_is_rejected(tmp_path, password_hash):
    path = _write(tmp_path, f"basic_auth_users:\n  a: '{password_hash}'\n  a: '{password_hash}'\n")
    message = _load_error(path)
    assert "duplicate key 'a'" in message
    assert password_hash not in message


def test_mismatched_key_is_rejected(tmp_path, pki):
    path = _write(tmp_path, f"tls_server_config:\n  cert_file: {pki['cert']}\n  key_file: {pki['other_key']}\n")
    assert "tls_server_config.key_file: private key does not match the certificate" in _load_error(path)


def test_cert_file_that_is_not_a_certificate_is_rejected(tmp_path, pki):
    path = _write(tmp_path, f"tls_server_config:\n  cert_file: {pki['key']}\n  key_file: {pki['key']}\n")
    assert "tls_server_config.cert_file: no PEM certificate found" in _load_error(path)


def test_encrypted_key_is_rejected_without_prompting(tmp_path, pki):
    encrypted = tmp_path / "enc.key"
    subprocess.run(["openssl", "pkey", "-in", str(pki["key"]), "-aes256", "-passout", "pass:pw",
                    "-out", str(encrypted)], check=True, capture_output=True, timeout=30, stdin=subprocess.DEVNULL)
    path = _write(tmp_path, f"tls_server_config:\n  cert_file: {pki['cert']}\n  key_file: {encrypted}\n")
    assert "private key is encrypted" in _load_error(path)


def test_bad_client_auth_type_is_rejected(tmp_path, pki):
    path = _write(tmp_path, f"tls_server_config:\n  cert_file: {pki['cert']}\n  key_file: {pki['key']}\n"
                            "  client_auth_type: RequireCert\n")
    assert "tls_server_config.client_auth_type: invalid value 'RequireCert'" in _load_error(path)


def test_client_ca_without_client_auth_type_is_rejected(tmp_path, pki):
    path = _write(tmp_path, f"tls_server_config:\n  cert_file: {pki['cert']}\n  key_file: {pki['key']}\n"
                            f"  client_ca_file: {pki['client_cert']}\n")
    assert "client_auth_type is NoClientCert" in _load_error(path)


def test_client_auth_without_cert_is_rejected(tmp_path):
    path = _write(tmp_path, "tls_server_config:\n  client_auth_type: RequireAndVerifyClientCert\n")
    assert "missing one of cert or cert_file" in _load_error(path)


@pytest.mark.parametrize("extra, expected", [
    ("  min_version: TLS14\n", "tls_server_config.min_version: unknown TLS version 'TLS14'"),
    ("  min_version: TLS13\n  max_version: TLS12\n", "min_version is above max_version"),
    ("  cipher_suites: [TLS_RSA_WITH_RC4_128_SHA]\n", "unknown or insecure cipher 'TLS_RSA_WITH_RC4_128_SHA'"),
    ("  curve_preferences: [CurveP224]\n", "unknown curve 'CurveP224'"),
    ("  client_allowed_sans: [a.example]\n", "client_allowed_sans: not supported"),
])
def test_bad_tls_settings_are_rejected(tmp_path, pki, extra, expected):
    path = _write(tmp_path, f"tls_server_config:\n  cert_file: {pki['cert']}\n  key_file: {pki['key']}\n{extra}")
    assert expected in _load_error(path)


@pytest.mark.parametrize("headers, expected", [
    ("X-Powered-By: me", "header 'X-Powered-By' can not be configured"),
    ("X-Frame-Options: allow", "X-Frame-Options: invalid value 'allow'"),
])
def test_bad_headers_are_rejected(tmp_path, headers, expected):
    path = _write(tmp_path, f"http_server_config:\n  headers:\n    {headers}\n")
    assert expected in _load_error(path)


def test_rate_limit_parses_go_durations(tmp_path):
    cfg = load_web_config(_write(tmp_path, "rate_limit:\n  interval: 1m30s\n  burst: 2\n"))
    assert cfg.rate_limit.interval_s == 90.0
    assert [cfg.allow_request() for _ in range(3)] == [True, True, False]
    assert "rate_limit.interval: expected a duration" in _load_error(
        _write(tmp_path, "rate_limit:\n  interval: 10 seconds\n  burst: 1\n"))
    assert "rate_limit.burst: must be at least 1" in _load_error(
        _write(tmp_path, "rate_limit:\n  interval: 1s\n"))


# --- basic auth -------------------------------------------------------------------------------------------


@pytest.fixture
def auth_config(tmp_path, password_hash) -> webconfig.WebConfig:
    return load_web_config(_write(tmp_path, f"basic_auth_users:\n  prometheus: '{password_hash}'\n"))


def test_basic_auth_right_wrong_unknown_and_malformed(auth_config):
    assert auth_config.check_basic_auth(_basic("prometheus", PASSWORD))
    assert auth_config.check_basic_auth("basic " + _basic("prometheus", PASSWORD)[6:])  # scheme is case-insensitive
    assert not auth_config.check_basic_auth(_basic("prometheus", PASSWORD + "x"))
    assert not auth_config.check_basic_auth(_basic("grafana", PASSWORD))
    assert not auth_config.check_basic_auth(None)
    assert not auth_config.check_basic_auth("")
    assert not auth_config.check_basic_auth("Bearer abc")
    assert not auth_config.check_basic_auth("Basic !!!not-base64!!!")
    assert not auth_config.check_basic_auth("Basic " + base64.b64encode(b"no-colon").decode())


def test_successful_verification_is_cached_failures_are_not(auth_config, monkeypatch):
    calls = []

    def counting_checkpw(password: bytes, hashed: bytes) -> bool:
        calls.append(hashed)
        return bcrypt.checkpw(password, hashed)

    monkeypatch.setattr(auth_config.auth, "checkpw", counting_checkpw)
    for _ in range(3):
        assert auth_config.check_basic_auth(_basic("prometheus", PASSWORD))
    assert len(calls) == 1
    for _ in range(2):
        assert not auth_config.check_basic_auth(_basic("prometheus", "wrong"))
    assert len(calls) == 3


def test_unknown_user_costs_a_bcrypt_at_the_configured_cost(auth_config, monkeypatch):
    calls = []
    monkeypatch.setattr(auth_config.auth, "checkpw", lambda p, h: calls.append(h) or bcrypt.checkpw(p, h))
    # The decoy password itself must not let an unknown user in.
    assert not auth_config.check_basic_auth(_basic("nobody", "fakepassword"))
    assert not auth_config.check_basic_auth(_basic("nobody", "fakepassword"))
    assert len(calls) == 2
    assert calls[0].startswith(b"$2b$%02d$" % BCRYPT_COST)


def test_cache_is_bounded(auth_config, password_hash):
    auth_config.auth.users = {f"u{i}": password_hash.encode() for i in range(webconfig.AUTH_CACHE_ENTRIES + 5)}
    for user in auth_config.auth.users:
        assert auth_config.check_basic_auth(_basic(user, PASSWORD))
    assert len(auth_config.auth.cache) == webconfig.AUTH_CACHE_ENTRIES


# --- end to end: curl against the exporter's own HTTP server ----------------------------------------------


class _OneGauge:
    """A scrape with one family: the server, not the collectors, is under test here."""

    def prefetch(self):
        pass

    def collect(self):
        g = GaugeMetricFamily("libvirt_up", "up")
        g.add_metric([], 1)
        return [g]


class _StubExporter:
    def scrape(self, timeout_s=None):
        return _OneGauge()


class _FakeClock:
    """Monotonic seconds that move only when the test says so."""

    def __init__(self) -> None:
        self.now_s = 1000.0

    def __call__(self) -> float:
        return self.now_s


@pytest.fixture
def serve(tmp_path):
    """start(web config text, clock=None) → port of a running ExporterHTTPServer (virt_exporter/server.py)
    with that web config, as the exporter serves it; ``clock`` replaces the rate limit's."""
    servers = []

    def start(config_text: str, clock=None) -> int:
        config = load_web_config(_write(tmp_path, config_text))
        if clock is not None:
            config.rate_limit = TokenBucket(config.rate_limit.interval_s, config.rate_limit.burst, clock=clock)
        server = ExporterHTTPServer("127.0.0.1:%d" % free_port(), _StubExporter(), web_config=config)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server.server_address[1]

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def _curl(url: str, *args: str) -> tuple:
    """(curl exit code, HTTP status as curl reports it, headers)."""
    result = subprocess.run(
        ["curl", "-sS", "--max-time", str(CURL_TIMEOUT_S), "-o", "/dev/null", "-D", "-",
         "-w", "%{http_code}", *args, url],
        capture_output=True, text=True, timeout=CURL_TIMEOUT_S + 5,
    )
    return result.returncode, result.stdout[-3:], result.stdout[:-3]


needs_curl = pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")


@needs_curl
def test_end_to_end_basic_auth_over_tls(serve, pki, password_hash):
    port = serve(f"""
tls_server_config:
  cert_file: {pki['cert']}
  key_file: {pki['key']}
http_server_config:
  headers:
    X-Content-Type-Options: nosniff
    X-Frame-Options: deny
basic_auth_users:
  prometheus: '{password_hash}'
""")
    url = f"https://127.0.0.1:{port}/metrics"
    ca = ["--cacert", str(pki["cert"])]

    rc, status, headers = _curl(url, *ca, "-u", f"prometheus:{PASSWORD}")
    assert (rc, status) == (0, "200")
    assert "x-content-type-options: nosniff" in headers.lower() and "x-frame-options: deny" in headers.lower()

    rc, status, headers = _curl(url, *ca, "-u", "prometheus:wrong")
    assert (rc, status) == (0, "401")
    assert "www-authenticate: basic" in headers.lower()
    assert "x-frame-options: deny" in headers.lower(), "the extra headers go on refusals too"

    assert _curl(url, *ca, "-u", f"grafana:{PASSWORD}")[:2] == (0, "401")
    assert _curl(url, *ca)[:2] == (0, "401")

    # Plain HTTP to the TLS port gets no HTTP answer.
    rc, status, _ = _curl(f"http://127.0.0.1:{port}/metrics", "-u", f"prometheus:{PASSWORD}")
    assert rc != 0 and status == "000"

    # A client that does not trust the server's certificate refuses it.
    rc, status, _ = _curl(url, "-u", f"prometheus:{PASSWORD}")
    assert rc != 0 and status == "000"


@needs_curl
@pytest.mark.parametrize("max_version", ["TLS12", "TLS13"])
def test_end_to_end_client_cert_required_and_max_version(serve, pki, max_version):
    port = serve(f"""
tls_server_config:
  cert_file: {pki['cert']}
  key_file: {pki['key']}
  client_auth_type: RequireAndVerifyClientCert
  client_ca_file: {pki['client_cert']}
  max_version: {max_version}
""")
    url = f"https://127.0.0.1:{port}/-/healthy"
    ca = ["--cacert", str(pki["cert"])]
    client = ["--cert", str(pki["client_cert"]), "--key", str(pki["client_key"])]

    rc, status, _ = _curl(url, *ca, *client)
    assert (rc, status) == (0, "200")

    rc, status, _ = _curl(url, *ca)
    assert rc != 0 and status == "000"

    # A certificate the server does not trust is refused too.
    rc, status, _ = _curl(url, *ca, "--cert", str(pki["cert"]), "--key", str(pki["key"]))
    assert rc != 0 and status == "000"

    # max_version: a client that asks for TLS 1.3 at least gets it only where the server allows it;
    # one that stops at TLS 1.2 is served either way.
    rc, status, _ = _curl(url, *ca, *client, "--tlsv1.3")
    assert ((rc, status) == (0, "200")) is (max_version == "TLS13"), (max_version, rc, status)
    assert _curl(url, *ca, *client, "--tls-max", "1.2")[:2] == (0, "200")


@needs_curl
def test_rate_limit_answers_429_and_refills_one_token_per_interval(serve):
    clock = _FakeClock()
    port = serve("""
http_server_config:
  headers:
    X-Frame-Options: deny
rate_limit:
  interval: 1m
  burst: 2
""", clock=clock)
    url = f"http://127.0.0.1:{port}/-/healthy"

    def statuses(n: int) -> list:
        return [_curl(url)[1] for _ in range(n)]

    # The clock stands still: the burst, then refusals, however slowly curl runs.
    assert statuses(3) == ["200", "200", "429"]
    rc, status, headers = _curl(url)
    assert status == "429" and "x-frame-options: deny" in headers.lower()
    clock.now_s += 59.0          # not yet a whole interval
    assert statuses(1) == ["429"]
    clock.now_s += 1.0           # one interval since the bucket ran dry: one token
    assert statuses(2) == ["200", "429"]
    # Refusals count the time they saw once: half an interval, refused, then just short of the next
    # whole one is still refused (counting the first half again would let a request through).
    clock.now_s += 30.0
    assert statuses(1) == ["429"]
    clock.now_s += 29.0
    assert statuses(1) == ["429"]
    clock.now_s += 1.0
    assert statuses(2) == ["200", "429"]
    for _ in range(5):           # an interval in sixths, refused at each
        clock.now_s += 10.0
        assert statuses(1) == ["429"]
    clock.now_s += 10.0          # the sixth sixth: a whole token (six sixths add up to a hair under 1 in floats)
    assert statuses(2) == ["200", "429"]
    clock.now_s += 600.0         # ten intervals: no more than the burst
    assert statuses(3) == ["200", "200", "429"]
