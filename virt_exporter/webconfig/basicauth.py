"""basic_auth_users: bcrypt hashes checked as exporter-toolkit does — a bounded cache of successful
checks, one bcrypt at a time, and a decoy hash so an unknown user costs as much as a known one."""

from __future__ import annotations

import base64
import binascii
import collections
import hashlib
import re
import secrets
import threading
from typing import Any, Callable, Dict, Optional, Tuple

import bcrypt

from .fields import Problem

# Go's bcrypt.Cost() accepts $2$, $2a$, $2b$, $2y$...; the bcrypt module verifies $2a$, $2b$, $2y$.
_BCRYPT_HASH = re.compile(r"^\$2[aby]\$(\d\d)\$[./A-Za-z0-9]{53}$")
_BCRYPT_MAX_PASSWORD_BYTES = 72  # Go's CompareHashAndPassword ignores bytes past 72; the module raises.
AUTH_CACHE_ENTRIES = 100  # exporter-toolkit's cache size
_DECOY_PASSWORD = b"fakepassword"


def parse_users(raw: Any) -> Dict[str, bytes]:
    """basic_auth_users: user -> bcrypt hash, every hash checked."""
    raw = raw or {}
    if not isinstance(raw, dict):
        raise Problem("basic_auth_users: expected a mapping of user to bcrypt hash")
    users: Dict[str, bytes] = {}
    for user, value in raw.items():
        if not isinstance(user, str) or not user:
            raise Problem("basic_auth_users: user names must be non-empty strings")
        users[user] = _check_bcrypt_hash(user, value)
    return users


def _check_bcrypt_hash(user: str, value: Any) -> bytes:
    where = f"basic_auth_users.{user}"
    if not isinstance(value, str):
        raise Problem(f"{where}: expected a bcrypt hash string")
    m = _BCRYPT_HASH.match(value)
    if not m:
        # Never echo the value: it may be a plain-text password.
        raise Problem(
            f"{where}: value is not a bcrypt hash (plain-text passwords are not accepted; "
            "generate a hash with: htpasswd -nBC 10 \"\" | tr -d ':\\n')"
        )
    if not 4 <= int(m.group(1)) <= 31:
        raise Problem(f"{where}: bcrypt cost {int(m.group(1))} out of range 4..31")
    return value.encode("ascii")


class BasicAuth:
    """Checks Authorization headers against the users. Thread-safe."""

    def __init__(self, users: Dict[str, bytes]) -> None:
        self.users = users
        # Successful verifications, keyed by a salted digest of (user, hash, password): the plain
        # password is never kept, and a scrape every 15 s costs one bcrypt only on the first request.
        self._cache_salt = secrets.token_bytes(16)
        self.cache: "collections.OrderedDict[bytes, None]" = collections.OrderedDict()
        self._cache_lock = threading.Lock()
        # One bcrypt at a time, as in exporter-toolkit: each one is CPU-heavy by design.
        self._bcrypt_lock = threading.Lock()
        self._decoy_hash: Optional[bytes] = None
        self.checkpw: Callable[[bytes, bytes], bool] = bcrypt.checkpw

    def check(self, authorization_header: Optional[str]) -> bool:
        """True when the header carries Basic credentials of a configured user with the right password.

        Always True when no users are configured. An unknown user costs one bcrypt against a decoy
        hash of the highest configured cost, so response time does not reveal which users exist.
        """
        if not self.users:
            return True
        credentials = parse_basic_authorization(authorization_header)
        if credentials is None:
            return False
        user, password = credentials
        hashed = self.users.get(user)
        known_user = hashed is not None
        if hashed is None:
            hashed = self._decoy()

        key = hashlib.sha256(b"\0".join((self._cache_salt, user.encode("utf-8"), hashed, password))).digest()
        with self._cache_lock:
            if key in self.cache:
                self.cache.move_to_end(key)
                return True

        with self._bcrypt_lock:
            try:
                ok = self.checkpw(password[:_BCRYPT_MAX_PASSWORD_BYTES], hashed)
            except ValueError:
                ok = False
        ok = ok and known_user
        if ok:
            with self._cache_lock:
                self.cache[key] = None
                while len(self.cache) > AUTH_CACHE_ENTRIES:
                    self.cache.popitem(last=False)
        return ok

    def _decoy(self) -> bytes:
        with self._bcrypt_lock:
            if self._decoy_hash is None:
                cost = max(int(h[4:6]) for h in self.users.values())
                self._decoy_hash = bcrypt.hashpw(_DECOY_PASSWORD, bcrypt.gensalt(rounds=cost))
            return self._decoy_hash


def parse_basic_authorization(header: Optional[str]) -> Optional[Tuple[str, bytes]]:
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
