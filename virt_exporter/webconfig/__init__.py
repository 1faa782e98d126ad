"""`--web.config.file`: TLS, basic auth and response headers in the exporter-toolkit format.

Operators reuse the web-config files they already write for node_exporter (prometheus/exporter-toolkit
`docs/web-configuration.md`). Everything is validated once, at start-up, so a bad file fails fast with
one line (`WebConfigError`); the HTTP server only asks this module for an `ssl.SSLContext`, whether a
request's `Authorization` header is good, the extra response headers and the rate limit.

Supported, as in exporter-toolkit:
- `tls_server_config`: cert_file, key_file, cert, key, client_ca_file, client_ca, client_auth_type,
  min_version, max_version, cipher_suites, prefer_server_cipher_suites, curve_preferences (see
  `WebConfig.ssl_context` for what Python's ssl cannot express exactly).
- `http_server_config`: headers (same allow-list and enumerated values as exporter-toolkit); http2 is
  accepted and has no effect (http.server speaks HTTP/1.1 only).
- `basic_auth_users`: user -> bcrypt hash.
- `rate_limit`: interval (Go duration) and burst, as a token bucket (`WebConfig.allow_request`).
Differences: the file is read once at start-up (exporter-toolkit re-reads it on every request and
reloads certificates on every connection) — restart the exporter to pick up changes;
`client_allowed_sans` is rejected as unsupported rather than silently ignored.

One module per concern: fields.py (strict YAML, typed fields), tls.py, basicauth.py, ratelimit.py;
this one holds the headers allow-list and puts the parts together.
"""

from __future__ import annotations

import os
import ssl
from typing import Any, Dict, Optional

from ..usage import one_line
from .basicauth import AUTH_CACHE_ENTRIES, BasicAuth, parse_users
from .fields import Problem, mapping, parse_yaml, string
from .ratelimit import TokenBucket, parse_rate_limit
from .tls import TLSSettings

__all__ = ["AUTH_CACHE_ENTRIES", "WebConfig", "WebConfigError", "load_web_config"]


class WebConfigError(Exception):
    """A web config file that cannot be used; str() is one line naming the file and the problem."""

    def __init__(self, path: str, problem: str):
        self.path = path
        self.problem = one_line(problem)  # whatever the source message looked like
        super().__init__(f"web config {path}: {self.problem}")


# exporter-toolkit's allow-list: header -> accepted values (None: any value).
_ALLOWED_HEADERS: Dict[str, Optional[tuple]] = {
    "Strict-Transport-Security": None,
    "X-Content-Type-Options": ("nosniff",),
    "X-Frame-Options": ("deny", "sameorigin"),
    "X-XSS-Protection": None,
    "Content-Security-Policy": None,
}

_TOP_LEVEL_KEYS = ("tls_server_config", "http_server_config", "basic_auth_users", "rate_limit")
_TLS_KEYS = (
    "cert", "key", "client_ca", "cert_file", "key_file", "client_auth_type", "client_ca_file",
    "client_allowed_sans", "min_version", "max_version", "cipher_suites",
    "prefer_server_cipher_suites", "curve_preferences",
)
_HTTP_KEYS = ("http2", "headers")


class WebConfig:
    """A validated web config. Thread-safe: the server calls it from its request threads."""

    def __init__(self, path: str, tls: Optional[TLSSettings], users: Dict[str, bytes],
                 extra_headers: Dict[str, str], rate_limit_interval_s: float, rate_limit_burst: int):
        self.path = path
        self._tls = tls
        self.auth = BasicAuth(users)
        self.extra_headers: Dict[str, str] = extra_headers
        self.rate_limit = TokenBucket(rate_limit_interval_s, rate_limit_burst)

    @property
    def auth_required(self) -> bool:
        return bool(self.auth.users)

    def ssl_context(self) -> Optional[ssl.SSLContext]:
        """The server-side SSLContext built from tls_server_config, or None when TLS is not configured.

        client_auth_type mapping (Go crypto/tls -> Python ssl):
        - NoClientCert -> CERT_NONE.
        - RequestClientCert -> CERT_NONE. Go asks for a certificate but never checks it, so every
          client is let in either way; Python cannot ask for one without verifying it.
        - RequireAnyClientCert -> CERT_REQUIRED. Gap: Python cannot require a certificate without
          verifying it, so the certificate must also chain to client_ca_file (system CAs without it).
        - VerifyClientCertIfGiven -> CERT_OPTIONAL (exact).
        - RequireAndVerifyClientCert -> CERT_REQUIRED (exact).
        Verifying modes without client_ca_file / client_ca use the system CAs, as Go does.

        Other gaps: cipher_suites applies to TLS <= 1.2 only (as in Go, TLS 1.3 suites are fixed);
        curve_preferences is enforced only when it names a single NIST curve (Python's ssl can select
        one curve and not X25519), otherwise OpenSSL's default groups are offered and a warning is
        logged; TLS10/TLS11 may be refused by the system OpenSSL policy regardless of min_version.
        """
        return self._tls.context if self._tls else None

    def check_basic_auth(self, authorization_header: Optional[str]) -> bool:
        """See BasicAuth.check."""
        return self.auth.check(authorization_header)

    def allow_request(self) -> bool:
        """The server answers 429 Too Many Requests when this is False, as exporter-toolkit does."""
        return self.rate_limit.allow()


def _parse_headers(raw: Any) -> Dict[str, str]:
    http_raw = mapping(raw, "http_server_config", _HTTP_KEYS)
    if not isinstance(http_raw.get("http2", True), bool):
        raise Problem("http_server_config.http2: expected true or false")
    headers_raw = http_raw.get("headers") or {}
    if not isinstance(headers_raw, dict):
        raise Problem("http_server_config.headers: expected a mapping")
    headers: Dict[str, str] = {}
    for name, value in headers_raw.items():
        if name not in _ALLOWED_HEADERS:
            raise Problem(f"http_server_config.headers: header {name!r} can not be configured "
                          f"(one of {', '.join(_ALLOWED_HEADERS)})")
        value = string(value, f"http_server_config.headers.{name}")
        allowed = _ALLOWED_HEADERS[name]
        if allowed and value not in allowed:
            raise Problem(f"http_server_config.headers.{name}: invalid value {value!r} (one of {', '.join(allowed)})")
        if value:  # exporter-toolkit: "Unset if blank"
            headers[name] = value
    return headers


def _parse(path: str, text: str) -> WebConfig:
    root = mapping(parse_yaml(text), "top level", _TOP_LEVEL_KEYS)
    config_dir = os.path.dirname(os.path.abspath(path))
    tls = TLSSettings(mapping(root.get("tls_server_config"), "tls_server_config", _TLS_KEYS), config_dir)
    headers = _parse_headers(root.get("http_server_config"))
    users = parse_users(root.get("basic_auth_users"))
    interval_s, burst = parse_rate_limit(root.get("rate_limit"))
    return WebConfig(path, tls if tls.enabled else None, users, headers, interval_s, burst)


def load_web_config(path: str) -> WebConfig:
    """Read and validate an exporter-toolkit web config file; raise WebConfigError on any problem."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise WebConfigError(path, "no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise WebConfigError(path, f"cannot read: {getattr(e, 'strerror', None) or e}") from None
    try:
        return _parse(path, text)
    except Problem as e:
        raise WebConfigError(path, str(e)) from None
