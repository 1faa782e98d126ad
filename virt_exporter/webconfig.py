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
"""

from __future__ import annotations

import base64
import binascii
import collections
import hashlib
import logging
import os
import re
import secrets
import ssl
import tempfile
import threading
import time
from typing import Any, Callable, Dict, List, Optional

import bcrypt
import yaml

log = logging.getLogger(__name__)

__all__ = ["WebConfig", "WebConfigError", "load_web_config"]


class WebConfigError(Exception):
    """A web config file that cannot be used; str() is one line naming the file and the problem."""

    def __init__(self, path: str, problem: str):
        self.path = path
        self.problem = " ".join(problem.split())  # one line, whatever the source message looked like
        super().__init__(f"web config {path}: {self.problem}")


class _Problem(Exception):
    """Raised while validating; load_web_config adds the file name."""


# Names exporter-toolkit accepts: Go's tls.CipherSuites() (the secure list) mapped to OpenSSL names.
# The TLS 1.3 suites are accepted and, as in Go, not configurable.
_TLS12_CIPHERS = {
    "TLS_RSA_WITH_AES_128_CBC_SHA": "AES128-SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA": "AES256-SHA",
    "TLS_RSA_WITH_AES_128_GCM_SHA256": "AES128-GCM-SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384": "AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": "ECDHE-ECDSA-AES128-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": "ECDHE-ECDSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": "ECDHE-RSA-AES128-SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": "ECDHE-RSA-AES256-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
}
_TLS13_CIPHERS = {"TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"}

# Go curve name -> OpenSSL name; None where Python's ssl.set_ecdh_curve cannot select it.
_CURVES = {"CurveP256": "prime256v1", "CurveP384": "secp384r1", "CurveP521": "secp521r1", "X25519": None}

_TLS_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}

_CLIENT_AUTH_TYPES = (
    "NoClientCert",
    "RequestClientCert",
    "RequireAnyClientCert",
    "VerifyClientCertIfGiven",
    "RequireAndVerifyClientCert",
)
# exporter-toolkit keeps this old spelling working.
_CLIENT_AUTH_ALIASES = {"RequireClientCert": "RequireAnyClientCert"}

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
_RATE_LIMIT_KEYS = ("interval", "burst")

# Go's bcrypt.Cost() accepts $2$, $2a$, $2b$, $2y$...; the bcrypt module verifies $2a$, $2b$, $2y$.
_BCRYPT_HASH = re.compile(r"^\$2[aby]\$(\d\d)\$[./A-Za-z0-9]{53}$")
_BCRYPT_MAX_PASSWORD_BYTES = 72  # Go's CompareHashAndPassword ignores bytes past 72; the module raises.
_AUTH_CACHE_ENTRIES = 100  # exporter-toolkit's cache size
_DECOY_PASSWORD = b"fakepassword"

_GO_DURATION_UNITS_S = {"ns": 1e-9, "us": 1e-6, "\u00b5s": 1e-6, "\u03bcs": 1e-6, "ms": 1e-3,
                        "s": 1.0, "m": 60.0, "h": 3600.0}
_GO_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|\u00b5s|\u03bcs|ms|s|m|h)")


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys, like Go's yaml.UnmarshalStrict."""


def _construct_mapping_no_duplicates(loader: _StrictLoader, node: yaml.MappingNode) -> Dict[Any, Any]:
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            raise _Problem(f"line {key_node.start_mark.line + 1}: duplicate key {key!r}")
        seen.add(key)
    return loader.construct_mapping(node)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping_no_duplicates)


def _parse_yaml(text: str) -> Any:
    try:
        return yaml.load(text, Loader=_StrictLoader)
    except yaml.MarkedYAMLError as e:
        # str(e) quotes the offending line, which may hold a hash: report position and problem only.
        mark = e.problem_mark or e.context_mark
        where = f"line {mark.line + 1} column {mark.column + 1}: " if mark else ""
        raise _Problem(f"invalid YAML: {where}{e.problem or e.context}") from None
    except yaml.YAMLError as e:
        raise _Problem(f"invalid YAML: {type(e).__name__}") from None


def _mapping(value: Any, where: str, allowed: tuple) -> Dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _Problem(f"{where}: expected a mapping")
    for key in value:
        if key not in allowed:
            # exporter-toolkit unmarshals strictly: a typo must not silently disable TLS or auth.
            raise _Problem(f"{where}: unknown field {key!r} (known: {', '.join(allowed)})")
    return value


def _string(value: Any, where: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _Problem(f"{where}: expected a string")
    return value


def _string_list(value: Any, where: str) -> List[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _Problem(f"{where}: expected a list of strings")
    return value


def _resolve(path: str, config_dir: str) -> str:
    """Relative paths are relative to the config file's directory, as in exporter-toolkit."""
    if not path or os.path.isabs(path):
        return path
    return os.path.join(config_dir, path)


def _read_file(path: str, where: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        raise _Problem(f"{where}: no such file {path}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise _Problem(f"{where}: cannot read {path}: {getattr(e, 'strerror', None) or e}") from None


def _parse_go_duration_s(value: Any, where: str) -> float:
    if value is None or value == 0 or value == "0":
        return 0.0
    if not isinstance(value, str) or not value or not re.fullmatch(f"(?:{_GO_DURATION.pattern})+", value):
        raise _Problem(f"{where}: expected a duration such as 1s, 500ms or 1m30s")
    return sum(float(n) * _GO_DURATION_UNITS_S[u] for n, u in _GO_DURATION.findall(value))


def _check_bcrypt_hash(user: str, value: Any) -> bytes:
    where = f"basic_auth_users.{user}"
    if not isinstance(value, str):
        raise _Problem(f"{where}: expected a bcrypt hash string")
    m = _BCRYPT_HASH.match(value)
    if not m:
        # Never echo the value: it may be a plain-text password.
        raise _Problem(
            f"{where}: value is not a bcrypt hash (plain-text passwords are not accepted; "
            "generate a hash with: htpasswd -nBC 10 \"\" | tr -d ':\\n')"
        )
    if not 4 <= int(m.group(1)) <= 31:
        raise _Problem(f"{where}: bcrypt cost {int(m.group(1))} out of range 4..31")
    return value.encode("ascii")


class _TLSSettings:
    """tls_server_config, validated; builds the server SSLContext."""

    def __init__(self, raw: Dict[str, Any], config_dir: str):
        w = "tls_server_config"
        self.cert_file = _resolve(_string(raw.get("cert_file"), f"{w}.cert_file"), config_dir)
        self.key_file = _resolve(_string(raw.get("key_file"), f"{w}.key_file"), config_dir)
        self.client_ca_file = _resolve(_string(raw.get("client_ca_file"), f"{w}.client_ca_file"), config_dir)
        self.cert_pem = _string(raw.get("cert"), f"{w}.cert")
        self.key_pem = _string(raw.get("key"), f"{w}.key")
        self.client_ca_pem = _string(raw.get("client_ca"), f"{w}.client_ca")
        auth = _string(raw.get("client_auth_type"), f"{w}.client_auth_type")
        self.enabled = any((self.cert_file, self.key_file, self.client_ca_file, self.cert_pem,
                            self.key_pem, self.client_ca_pem, auth))
        if not self.enabled:
            return

        for inline, file_ in (("cert", "cert_file"), ("key", "key_file"), ("client_ca", "client_ca_file")):
            if raw.get(inline) and raw.get(file_):
                raise _Problem(f"{w}: set {inline} or {file_}, not both")
        if not (self.cert_file or self.cert_pem):
            raise _Problem(f"{w}: missing one of cert or cert_file")
        if not (self.key_file or self.key_pem):
            raise _Problem(f"{w}: missing one of key or key_file")

        auth = _CLIENT_AUTH_ALIASES.get(auth, auth) or "NoClientCert"
        if auth not in _CLIENT_AUTH_TYPES:
            raise _Problem(f"{w}.client_auth_type: invalid value {auth!r} (one of {', '.join(_CLIENT_AUTH_TYPES)})")
        self.client_auth_type = auth
        if (self.client_ca_file or self.client_ca_pem) and auth == "NoClientCert":
            raise _Problem(f"{w}: client CAs are configured but client_auth_type is NoClientCert")
        if raw.get("client_allowed_sans") is not None:
            raise _Problem(f"{w}.client_allowed_sans: not supported by this exporter "
                           "(Python's ssl has no per-handshake verification hook)")

        self.min_version = self._version(raw.get("min_version"), "min_version", "TLS12")
        self.max_version = self._version(raw.get("max_version"), "max_version", "TLS13")
        if self.min_version > self.max_version:
            raise _Problem(f"{w}: min_version is above max_version")

        ciphers = _string_list(raw.get("cipher_suites"), f"{w}.cipher_suites")
        for name in ciphers:
            if name not in _TLS12_CIPHERS and name not in _TLS13_CIPHERS:
                raise _Problem(f"{w}.cipher_suites: unknown or insecure cipher {name!r}")
        self.openssl_ciphers = [_TLS12_CIPHERS[n] for n in ciphers if n in _TLS12_CIPHERS]

        prefer = raw.get("prefer_server_cipher_suites", True)
        if not isinstance(prefer, bool):
            raise _Problem(f"{w}.prefer_server_cipher_suites: expected true or false")
        self.prefer_server_cipher_suites = prefer

        self.curves = _string_list(raw.get("curve_preferences"), f"{w}.curve_preferences")
        for name in self.curves:
            if name not in _CURVES:
                raise _Problem(f"{w}.curve_preferences: unknown curve {name!r} (one of {', '.join(_CURVES)})")

        self.context = self._build_context()

    @staticmethod
    def _version(value: Any, key: str, default: str) -> ssl.TLSVersion:
        name = _string(value, f"tls_server_config.{key}") or default
        if name not in _TLS_VERSIONS:
            raise _Problem(f"tls_server_config.{key}: unknown TLS version {name!r} (one of {', '.join(_TLS_VERSIONS)})")
        return _TLS_VERSIONS[name]

    def _build_context(self) -> ssl.SSLContext:
        w = "tls_server_config"
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = self.min_version
        ctx.maximum_version = self.max_version
        self._load_cert_chain(ctx)

        if self.prefer_server_cipher_suites:
            ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
        else:
            ctx.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
        if self.openssl_ciphers:
            try:
                ctx.set_ciphers(":".join(self.openssl_ciphers))
            except ssl.SSLError:
                raise _Problem(f"{w}.cipher_suites: none of the listed suites is available in this OpenSSL") from None
        self._set_curves(ctx)

        ctx.verify_mode = {
            "NoClientCert": ssl.CERT_NONE,
            # Go requests a certificate and never checks it, so any client gets in; not asking is the
            # same access decision, and Python cannot request a certificate without verifying it.
            "RequestClientCert": ssl.CERT_NONE,
            # Python cannot require a certificate without verifying it: stricter than Go.
            "RequireAnyClientCert": ssl.CERT_REQUIRED,
            "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
            "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
        }[self.client_auth_type]
        if self.client_auth_type == "RequireAnyClientCert":
            log.warning("web config: client_auth_type RequireAnyClientCert also verifies the client "
                        "certificate here (against client_ca_file, or the system CAs without it)")
        if ctx.verify_mode != ssl.CERT_NONE:
            try:
                if self.client_ca_file:
                    ctx.load_verify_locations(cadata=_read_file(self.client_ca_file, f"{w}.client_ca_file"))
                elif self.client_ca_pem:
                    ctx.load_verify_locations(cadata=self.client_ca_pem)
                else:
                    # Go verifies against the system roots when ClientCAs is unset.
                    ctx.load_default_certs(ssl.Purpose.CLIENT_AUTH)
            except ssl.SSLError:
                what = "client_ca_file" if self.client_ca_file else "client_ca"
                raise _Problem(f"{w}.{what}: no PEM certificate could be loaded") from None
        return ctx

    def _set_curves(self, ctx: ssl.SSLContext) -> None:
        if not self.curves:
            return
        if len(self.curves) == 1 and _CURVES[self.curves[0]]:
            ctx.set_ecdh_curve(_CURVES[self.curves[0]])
            return
        log.warning("web config: curve_preferences %s not enforced (Python's ssl can select a single "
                    "NIST curve only); OpenSSL's default groups are offered", self.curves)

    def _load_cert_chain(self, ctx: ssl.SSLContext) -> None:
        w = "tls_server_config"
        cert_where = f"{w}.cert_file" if self.cert_file else f"{w}.cert"
        key_where = f"{w}.key_file" if self.key_file else f"{w}.key"
        cert_pem = _read_file(self.cert_file, cert_where) if self.cert_file else self.cert_pem
        if self.key_file:
            _read_file(self.key_file, key_where)  # a clear "no such file" / permission message first
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cadata=cert_pem)
        except ssl.SSLError:
            raise _Problem(f"{cert_where}: no PEM certificate found") from None

        # load_cert_chain reads files only; inline PEM goes through private temporary files.
        with tempfile.TemporaryDirectory(prefix="virt_exporter_tls_") as tmp_dir:
            cert_path, key_path = self.cert_file, self.key_file
            if not cert_path:
                cert_path = _write_private(tmp_dir, "cert.pem", self.cert_pem)
            if not key_path:
                key_path = _write_private(tmp_dir, "key.pem", self.key_pem)
            try:
                ctx.load_cert_chain(cert_path, key_path, password=_refuse_passphrase)
            except _EncryptedKey:
                raise _Problem(f"{key_where}: private key is encrypted (not supported)") from None
            except ssl.SSLError as e:
                if e.reason == "KEY_VALUES_MISMATCH":
                    raise _Problem(f"{key_where}: private key does not match the certificate") from None
                raise _Problem(f"{key_where}: cannot load private key ({e.reason or 'OpenSSL error'})") from None


class _EncryptedKey(Exception):
    pass


def _refuse_passphrase() -> str:
    # Without a callback OpenSSL would prompt on the terminal for an encrypted key.
    raise _EncryptedKey()


def _write_private(directory: str, name: str, text: str) -> str:
    path = os.path.join(directory, name)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    return path


class WebConfig:
    """A validated web config. Thread-safe: the server calls it from its request threads."""

    def __init__(
        self,
        path: str,
        tls: Optional[_TLSSettings],
        users: Dict[str, bytes],
        extra_headers: Dict[str, str],
        rate_limit_interval_s: float,
        rate_limit_burst: int,
    ):
        self.path = path
        self._tls = tls
        self._users = users
        self.extra_headers: Dict[str, str] = extra_headers
        self.rate_limit_interval_s = rate_limit_interval_s
        self.rate_limit_burst = rate_limit_burst
        self._tokens = float(rate_limit_burst)
        self._tokens_at_s = time.monotonic()
        self._rate_lock = threading.Lock()
        # Successful verifications, keyed by a salted digest of (user, hash, password): the plain
        # password is never kept, and a scrape every 15 s costs one bcrypt only on the first request.
        self._cache_salt = secrets.token_bytes(16)
        self._auth_cache: "collections.OrderedDict[bytes, None]" = collections.OrderedDict()
        self._cache_lock = threading.Lock()
        # One bcrypt at a time, as in exporter-toolkit: each one is CPU-heavy by design.
        self._bcrypt_lock = threading.Lock()
        self._decoy_hash: Optional[bytes] = None
        self._checkpw: Callable[[bytes, bytes], bool] = bcrypt.checkpw

    @property
    def tls_enabled(self) -> bool:
        return self._tls is not None

    @property
    def auth_required(self) -> bool:
        return bool(self._users)

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
        """True when the header carries Basic credentials of a configured user with the right password.

        Always True when no users are configured. An unknown user costs one bcrypt against a decoy
        hash of the highest configured cost, so response time does not reveal which users exist.
        """
        if not self._users:
            return True
        credentials = _parse_basic_authorization(authorization_header)
        if credentials is None:
            return False
        user, password = credentials
        hashed = self._users.get(user)
        known_user = hashed is not None
        if hashed is None:
            hashed = self._decoy()

        key = hashlib.sha256(
            b"\0".join((self._cache_salt, user.encode("utf-8"), hashed, password))
        ).digest()
        with self._cache_lock:
            if key in self._auth_cache:
                self._auth_cache.move_to_end(key)
                return True

        with self._bcrypt_lock:
            try:
                ok = self._checkpw(password[:_BCRYPT_MAX_PASSWORD_BYTES], hashed)
            except ValueError:
                ok = False
        ok = ok and known_user
        if ok:
            with self._cache_lock:
                self._auth_cache[key] = None
                while len(self._auth_cache) > _AUTH_CACHE_ENTRIES:
                    self._auth_cache.popitem(last=False)
        return ok

    def allow_request(self) -> bool:
        """Token bucket from rate_limit (refill one per interval, up to burst); True when unlimited.

        The server answers 429 Too Many Requests when this is False, as exporter-toolkit does.
        """
        if self.rate_limit_interval_s <= 0:
            return True
        with self._rate_lock:
            now_s = time.monotonic()
            refill = (now_s - self._tokens_at_s) / self.rate_limit_interval_s
            self._tokens = min(float(self.rate_limit_burst), self._tokens + refill)
            self._tokens_at_s = now_s
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return True
            return False

    def _decoy(self) -> bytes:
        with self._bcrypt_lock:
            if self._decoy_hash is None:
                cost = max(int(h[4:6]) for h in self._users.values())
                self._decoy_hash = bcrypt.hashpw(_DECOY_PASSWORD, bcrypt.gensalt(rounds=cost))
            return self._decoy_hash


def _parse_basic_authorization(header: Optional[str]) -> Optional[tuple]:
    """(user, password bytes) from an `Authorization: Basic ...` header, or None when malformed."""
    if not header:
        return None
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    user, sep, password = decoded.partition(b":")
    if not sep:
        return None
    try:
        return user.decode("utf-8"), password
    except UnicodeDecodeError:
        return None


def _parse(path: str, text: str) -> WebConfig:
    root = _mapping(_parse_yaml(text), "top level", _TOP_LEVEL_KEYS)
    config_dir = os.path.dirname(os.path.abspath(path))

    tls_raw = _mapping(root.get("tls_server_config"), "tls_server_config", _TLS_KEYS)
    tls = _TLSSettings(tls_raw, config_dir)

    http_raw = _mapping(root.get("http_server_config"), "http_server_config", _HTTP_KEYS)
    if not isinstance(http_raw.get("http2", True), bool):
        raise _Problem("http_server_config.http2: expected true or false")
    headers_raw = http_raw.get("headers") or {}
    if not isinstance(headers_raw, dict):
        raise _Problem("http_server_config.headers: expected a mapping")
    headers: Dict[str, str] = {}
    for name, value in headers_raw.items():
        if name not in _ALLOWED_HEADERS:
            raise _Problem(f"http_server_config.headers: header {name!r} can not be configured "
                           f"(one of {', '.join(_ALLOWED_HEADERS)})")
        value = _string(value, f"http_server_config.headers.{name}")
        allowed = _ALLOWED_HEADERS[name]
        if allowed and value not in allowed:
            raise _Problem(f"http_server_config.headers.{name}: invalid value {value!r} (one of {', '.join(allowed)})")
        if value:  # exporter-toolkit: "Unset if blank"
            headers[name] = value

    users_raw = root.get("basic_auth_users") or {}
    if not isinstance(users_raw, dict):
        raise _Problem("basic_auth_users: expected a mapping of user to bcrypt hash")
    users: Dict[str, bytes] = {}
    for user, value in users_raw.items():
        if not isinstance(user, str) or not user:
            raise _Problem("basic_auth_users: user names must be non-empty strings")
        users[user] = _check_bcrypt_hash(user, value)

    rate_raw = _mapping(root.get("rate_limit"), "rate_limit", _RATE_LIMIT_KEYS)
    interval_s = _parse_go_duration_s(rate_raw.get("interval"), "rate_limit.interval")
    burst = rate_raw.get("burst", 0)
    if not isinstance(burst, int) or isinstance(burst, bool) or burst < 0:
        raise _Problem("rate_limit.burst: expected a non-negative integer")
    if interval_s > 0 and burst < 1:
        # Go's limiter with burst 0 refuses every request; make that a start-up error instead.
        raise _Problem("rate_limit.burst: must be at least 1 when rate_limit.interval is set")

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
    except _Problem as e:
        raise WebConfigError(path, str(e)) from None
