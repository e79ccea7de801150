"""CORS for browser snippets: the allow-list belongs to each write key."""

from __future__ import annotations

from convtrack.collect.auth import ApiKey, Keyring

ALLOW_METHODS = b"POST, OPTIONS"
ALLOW_HEADERS = b"authorization, content-type, content-encoding"


def allow_headers(origin: str) -> list[tuple[bytes, bytes]]:
    """Echo the one allowed origin (never '*': some clients send credentials)."""
    return [
        (b"access-control-allow-origin", origin.encode("latin-1")),
        (b"vary", b"Origin"),
        # Not a CORS-safelisted header: without this the SDK could not honour it on 429/503.
        (b"access-control-expose-headers", b"retry-after"),
    ]


def preflight_allowed(keyring: Keyring, origin: str, key: ApiKey | None) -> bool:
    """A preflight carries no Authorization: judge by the ?writeKey= key, else by any write key."""
    if key is not None:
        return key.allows_origin(origin)
    return any(k.role == "write" and k.allows_origin(origin) for k in keyring.all_keys())


def preflight_headers(origin: str, max_age_secs: int) -> list[tuple[bytes, bytes]]:
    return [
        *allow_headers(origin),
        (b"access-control-allow-methods", ALLOW_METHODS),
        (b"access-control-allow-headers", ALLOW_HEADERS),
        (b"access-control-max-age", str(max_age_secs).encode()),
    ]
