"""tls_server_config: validated once, turned into the server's ssl.SSLContext."""

from __future__ import annotations

import logging
import os
import ssl
import tempfile
from typing import Any, Dict

from .fields import Problem, read_file, resolve, string, string_list

log = logging.getLogger(__name__)

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

class TLSSettings:
    """tls_server_config, validated; builds the server SSLContext."""

    def __init__(self, raw: Dict[str, Any], config_dir: str):
        w = "tls_server_config"
        self.cert_file = resolve(string(raw.get("cert_file"), f"{w}.cert_file"), config_dir)
        self.key_file = resolve(string(raw.get("key_file"), f"{w}.key_file"), config_dir)
        self.client_ca_file = resolve(string(raw.get("client_ca_file"), f"{w}.client_ca_file"), config_dir)
        self.cert_pem = string(raw.get("cert"), f"{w}.cert")
        self.key_pem = string(raw.get("key"), f"{w}.key")
        self.client_ca_pem = string(raw.get("client_ca"), f"{w}.client_ca")
        auth = string(raw.get("client_auth_type"), f"{w}.client_auth_type")
        self.enabled = any((self.cert_file, self.key_file, self.client_ca_file, self.cert_pem,
                            self.key_pem, self.client_ca_pem, auth))
        if not self.enabled:
            return

        for inline, file_ in (("cert", "cert_file"), ("key", "key_file"), ("client_ca", "client_ca_file")):
            if raw.get(inline) and raw.get(file_):
                raise Problem(f"{w}: set {inline} or {file_}, not both")
        if not (self.cert_file or self.cert_pem):
            raise Problem(f"{w}: missing one of cert or cert_file")
        if not (self.key_file or self.key_pem):
            raise Problem(f"{w}: missing one of key or key_file")

        auth = _CLIENT_AUTH_ALIASES.get(auth, auth) or "NoClientCert"
        if auth not in _CLIENT_AUTH_TYPES:
            raise Problem(f"{w}.client_auth_type: invalid value {auth!r} (one of {', '.join(_CLIENT_AUTH_TYPES)})")
        self.client_auth_type = auth
        if (self.client_ca_file or self.client_ca_pem) and auth == "NoClientCert":
            raise Problem(f"{w}: client CAs are configured but client_auth_type is NoClientCert")
        if raw.get("client_allowed_sans") is not None:
            raise Problem(f"{w}.client_allowed_sans: not supported by this exporter "
                           "(Python's ssl has no per-handshake verification hook)")

        self.min_version = self._version(raw.get("min_version"), "min_version", "TLS12")
        self.max_version = self._version(raw.get("max_version"), "max_version", "TLS13")
        if self.min_version > self.max_version:
            raise Problem(f"{w}: min_version is above max_version")

        ciphers = string_list(raw.get("cipher_suites"), f"{w}.cipher_suites")
        for name in ciphers:
            if name not in _TLS12_CIPHERS and name not in _TLS13_CIPHERS:
                raise Problem(f"{w}.cipher_suites: unknown or insecure cipher {name!r}")
        self.openssl_ciphers = [_TLS12_CIPHERS[n] for n in ciphers if n in _TLS12_CIPHERS]

        prefer = raw.get("prefer_server_cipher_suites", True)
        if not isinstance(prefer, bool):
            raise Problem(f"{w}.prefer_server_cipher_suites: expected true or false")
        self.prefer_server_cipher_suites = prefer

        self.curves = string_list(raw.get("curve_preferences"), f"{w}.curve_preferences")
        for name in self.curves:
            if name not in _CURVES:
                raise Problem(f"{w}.curve_preferences: unknown curve {name!r} (one of {', '.join(_CURVES)})")

        self.context = self._build_context()

    @staticmethod
    def _version(value: Any, key: str, default: str) -> ssl.TLSVersion:
        name = string(value, f"tls_server_config.{key}") or default
        if name not in _TLS_VERSIONS:
            raise Problem(f"tls_server_config.{key}: unknown TLS version {name!r} (one of {', '.join(_TLS_VERSIONS)})")
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
                raise Problem(f"{w}.cipher_suites: none of the listed suites is available in this OpenSSL") from None
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
                    ctx.load_verify_locations(cadata=read_file(self.client_ca_file, f"{w}.client_ca_file"))
                elif self.client_ca_pem:
                    ctx.load_verify_locations(cadata=self.client_ca_pem)
                else:
                    # Go verifies against the system roots when ClientCAs is unset.
                    ctx.load_default_certs(ssl.Purpose.CLIENT_AUTH)
            except ssl.SSLError:
                what = "client_ca_file" if self.client_ca_file else "client_ca"
                raise Problem(f"{w}.{what}: no PEM certificate could be loaded") from None
        return ctx

    def _set_curves(self, ctx: ssl.SSLContext) -> None:
        if not self.curves:
            return
        curve = _CURVES[self.curves[0]] if len(self.curves) == 1 else None
        if curve is not None:
            ctx.set_ecdh_curve(curve)
            return
        log.warning("web config: curve_preferences %s not enforced (Python's ssl can select a single "
                    "NIST curve only); OpenSSL's default groups are offered", self.curves)

    def _load_cert_chain(self, ctx: ssl.SSLContext) -> None:
        w = "tls_server_config"
        cert_where = f"{w}.cert_file" if self.cert_file else f"{w}.cert"
        key_where = f"{w}.key_file" if self.key_file else f"{w}.key"
        cert_pem = read_file(self.cert_file, cert_where) if self.cert_file else self.cert_pem
        if self.key_file:
            read_file(self.key_file, key_where)  # a clear "no such file" / permission message first
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cadata=cert_pem)
        except ssl.SSLError:
            raise Problem(f"{cert_where}: no PEM certificate found") from None

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
                raise Problem(f"{key_where}: private key is encrypted (not supported)") from None
            except ssl.SSLError as e:
                if e.reason == "KEY_VALUES_MISMATCH":
                    raise Problem(f"{key_where}: private key does not match the certificate") from None
                raise Problem(f"{key_where}: cannot load private key ({e.reason or 'OpenSSL error'})") from None


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
