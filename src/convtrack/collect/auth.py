"""Keys and roles. A key proves a role; roles nest: admin ⊇ server ⊇ write."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Iterable
from functools import lru_cache

import msgspec

from convtrack.collect.http import Request

ROLE_RANK = {"write": 1, "server": 2, "admin": 3}
ANY_ORIGIN = "*"


class ApiKey(msgspec.Struct, frozen=True, kw_only=True):
    secret: str
    role: str
    source: str = "default"
    allowed_origins: frozenset[str] = frozenset({ANY_ORIGIN})

    @property
    def key_id(self) -> str:
        """A non-secret handle for logs and rejects."""
        return _key_id(self.secret)

    def may(self, role: str) -> bool:
        return ROLE_RANK[self.role] >= ROLE_RANK[role]

    def allows_origin(self, origin: str) -> bool:
        # "null" (sandboxed frames, file: pages) is never covered by the wildcard.
        if origin == "null":
            return "null" in self.allowed_origins
        return ANY_ORIGIN in self.allowed_origins or origin in self.allowed_origins


@lru_cache(maxsize=256)
def _key_id(secret: str) -> str:
    return "key_" + hashlib.sha256(secret.encode()).hexdigest()[:12]


def valid_secret(secret: str) -> bool:
    """CONTRACT.md: 16 to 128 printable ASCII characters."""
    return 16 <= len(secret) <= 128 and secret.isascii() and secret.isprintable()


class Keyring:
    def __init__(self, keys: Iterable[ApiKey]) -> None:
        # Looked up by digest so the dict probe does not compare secrets byte by byte.
        self._by_digest = {self._digest(k.secret): k for k in keys}
        # Secrets already proven, so a hot client skips the hash. Only known keys go
        # in (the cache stays as small as the keyring); a str probe compares bytes
        # only on a full (randomized) hash match, so it leaks no more than the digest.
        self._proven: dict[str, ApiKey] = {}

    @staticmethod
    def _digest(secret: str) -> bytes:
        return hashlib.sha256(secret.encode("utf-8", "surrogateescape")).digest()

    def lookup(self, secret: str) -> ApiKey | None:
        proven = self._proven.get(secret)
        if proven is not None:
            return proven
        key = self._by_digest.get(self._digest(secret))
        if key is not None and hmac.compare_digest(key.secret.encode(), secret.encode()):
            self._proven[key.secret] = key
            return key
        return None

    def all_keys(self) -> list[ApiKey]:
        return list(self._by_digest.values())


class Credential(msgspec.Struct, frozen=True):
    secret: str
    via: str  # "bearer", "basic" or "query"


def read_credential(request: Request) -> Credential | None:
    """Bearer header, HTTP Basic with the key as user name, or ``?writeKey=``."""
    header = request.headers.get("authorization")
    if header:
        scheme, _, value = header.strip().partition(" ")
        scheme = scheme.lower()
        value = value.strip()
        if scheme == "bearer" and value:
            return Credential(value, "bearer")
        if scheme == "basic" and value:
            try:
                decoded = base64.b64decode(value, validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                return None
            user = decoded.partition(":")[0]
            return Credential(user, "basic") if user else None
        return None
    query_key = request.query_one("writeKey")
    if query_key:
        return Credential(query_key, "query")
    return None


_HOW_TO_SEND = 'send "Authorization: Bearer <key>"'


def why_no_key(request: Request) -> str:
    """The message of a 401 ``key_missing``: what was sent instead of a key, and the fix.

    Called only when ``read_credential`` found nothing. Never quotes the header:
    a bare key sent without its scheme would be echoed back (and logged by proxies)."""
    header = request.headers.get("authorization", "").strip()
    if not header:
        query_hint = "" if request.query_one("writeKey") is None else " (?writeKey= is empty)"
        return (
            f"no key{query_hint}: {_HOW_TO_SEND}; a write key may also come as"
            " ?writeKey=<key> or as HTTP Basic with the key as user name"
        )
    ignored = (
        "; ?writeKey= is not read when an Authorization header is sent"
        if request.query_one("writeKey") is not None
        else ""
    )
    scheme, _, value = header.partition(" ")
    scheme = scheme.lower()
    if scheme in ("bearer", "basic") and not value.strip():
        reason = f"the Authorization header's {scheme.title()} credentials are empty"
    elif not value.strip():
        reason = "the Authorization header has no scheme (a bare key?)"
    elif scheme == "basic":
        reason = (
            'the Authorization header\'s Basic credentials are not base64 of "<key>:" with'
            ' the key as user name (Segment\'s convention; curl -u "<key>:")'
        )
    else:
        reason = "the Authorization header's scheme is neither Bearer nor Basic"
    return f"{reason}: {_HOW_TO_SEND}{ignored}"
