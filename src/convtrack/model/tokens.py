"""Conversion tokens: signed, unforgeable, one per transaction. Pure: the clock is passed in.

A token is three dot-separated parts::

    ct1.<base64url(payload JSON)>.<base64url(HMAC-SHA256(secret, "ct1." + payload_b64))>

base64url without padding. The payload is ``{"o": order_id, "s": source,
"iat": issued_at_us, "exp": expires_at_us, "n": nonce}``, times in epoch
microseconds and the nonce 128 random bits as 32 lowercase hex digits. The
nonce is the token's id: the processor remembers it for the token's life to
count a token at most once.

Verification accepts any of several secrets (the first one signs), so a secret
can be rotated without refusing the tokens already handed out.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets as _random
from collections.abc import Sequence

import msgspec

VERSION = "ct1"
MAX_TOKEN_CHARS = 2048  # a 256-character order id of 4-byte characters still fits
_NONCE = re.compile(r"[0-9a-f]{32}")
_B64URL = re.compile(r"[A-Za-z0-9_-]+")
_SIGNATURE_CHARS = 43  # 32 bytes of HMAC-SHA256, base64url without padding


class IssuedToken(msgspec.Struct, frozen=True, kw_only=True):
    token: str
    expires_at_us: int


class TokenClaims(msgspec.Struct, frozen=True, kw_only=True):
    order_id: str
    source: str
    issued_at_us: int
    expires_at_us: int
    token_id: str  # the nonce: the same token always has the same id


class _Payload(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    o: str
    s: str
    iat: int
    exp: int
    n: str


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(_Payload).decode


def _b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes | None:
    """Strict base64url without padding: only the canonical spelling of some bytes."""
    if not _B64URL.fullmatch(text) or len(text) % 4 == 1:
        return None
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None
    # Unused low bits must be zero, so one token has exactly one spelling.
    return raw if _b64encode(raw) == text else None


def _sign(secret: bytes, payload_b64: str) -> bytes:
    return hmac.new(secret, f"{VERSION}.{payload_b64}".encode("ascii"), hashlib.sha256).digest()


def issue_token(
    secret: bytes,
    order_id: str,
    source: str,
    now_us: int,
    ttl_secs: int,
    *,
    nonce: str | None = None,
) -> IssuedToken:
    """Sign a token for ``order_id`` bound to ``source``, valid for ``ttl_secs`` from ``now_us``.

    ``nonce`` is for tests; by default it is 128 fresh random bits.
    """
    if not secret:
        raise ValueError("a token secret must not be empty")
    if ttl_secs <= 0:
        raise ValueError("ttl_secs must be positive")
    nonce = _random.token_hex(16) if nonce is None else nonce
    if not _NONCE.fullmatch(nonce):
        raise ValueError("nonce must be 32 lowercase hex digits")
    expires_at_us = now_us + ttl_secs * 1_000_000
    payload = _Payload(o=order_id, s=source, iat=now_us, exp=expires_at_us, n=nonce)
    payload_b64 = _b64encode(_encode(payload))
    signature_b64 = _b64encode(_sign(secret, payload_b64))
    return IssuedToken(
        token=f"{VERSION}.{payload_b64}.{signature_b64}", expires_at_us=expires_at_us
    )


def _split(token: object) -> tuple[str, bytes, bytes] | None:
    """(payload_b64, payload bytes, signature) of a well-formed token, else None."""
    if not isinstance(token, str) or not 0 < len(token) <= MAX_TOKEN_CHARS:
        return None
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != VERSION or len(parts[2]) != _SIGNATURE_CHARS:
        return None
    payload = _b64decode(parts[1])
    signature = _b64decode(parts[2])
    if payload is None or signature is None:
        return None
    return parts[1], payload, signature


def _claims(payload: bytes) -> TokenClaims | None:
    try:
        decoded = _decode(payload)
    except msgspec.DecodeError:  # ValidationError is a subclass
        return None
    if not _NONCE.fullmatch(decoded.n) or decoded.exp <= decoded.iat:
        return None
    return TokenClaims(
        order_id=decoded.o,
        source=decoded.s,
        issued_at_us=decoded.iat,
        expires_at_us=decoded.exp,
        token_id=decoded.n,
    )


def read_claims(token: object) -> TokenClaims | None:
    """The claims of a well-formed token WITHOUT checking its signature or expiry.

    Only for tokens the collector has already verified (the processor reads
    ``token_id`` and ``expires_at_us`` from accepted events).
    """
    split = _split(token)
    return None if split is None else _claims(split[1])


def verify_token(
    secrets: Sequence[bytes], token: object, source: str, now_us: int
) -> TokenClaims | None:
    """The claims of a genuine, unexpired token issued for ``source``; None otherwise.

    None for a forged, tampered, malformed or expired token (expired: ``now_us``
    at or past ``expires_at_us``), for a token of another source, and when no
    secret is given.
    """
    split = _split(token)
    if split is None:
        return None
    payload_b64, payload, signature = split
    genuine = False
    for secret in secrets:
        # No early exit: every configured secret costs the same, match or not.
        genuine |= bool(secret) and hmac.compare_digest(_sign(secret, payload_b64), signature)
    if not genuine:
        return None
    claims = _claims(payload)
    if claims is None or claims.source != source or now_us >= claims.expires_at_us:
        return None
    return claims
