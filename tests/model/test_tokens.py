"""Unit tests for conversion tokens (model/tokens.py) and their check in event validation."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import string
from typing import Any

import pytest

from convtrack.clock import ManualClock
from convtrack.model import codes
from convtrack.model.event import Envelope
from convtrack.model.tokens import (
    MAX_TOKEN_CHARS,
    TokenClaims,
    issue_token,
    read_claims,
    verify_token,
)
from convtrack.model.validate import IngestFacts, Rules, validate_event

SECRET = b"s" * 32
OTHER = b"o" * 32
NOW_US = 1_796_000_000_000_000
TTL = 3600
B64_ALPHABET = string.ascii_uppercase + string.ascii_lowercase + string.digits + "-_"


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def signed(secret: bytes, payload: Any) -> str:
    """A token built by hand: any payload, correctly signed."""
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    body = b64(raw)
    sig = hmac.new(secret, f"ct1.{body}".encode(), hashlib.sha256).digest()
    return f"ct1.{body}.{b64(sig)}"


def test_issue_then_verify() -> None:
    issued = issue_token(SECRET, "ord_1001", "shop", NOW_US, TTL)
    assert issued.expires_at_us == NOW_US + TTL * 1_000_000
    prefix, payload_b64, sig_b64 = issued.token.split(".")
    assert prefix == "ct1" and len(sig_b64) == 43 and "=" not in issued.token
    payload = json.loads(unb64(payload_b64))
    assert set(payload) == {"o", "s", "iat", "exp", "n"}
    assert (payload["o"], payload["s"], payload["iat"]) == ("ord_1001", "shop", NOW_US)
    claims = verify_token([SECRET], issued.token, "shop", NOW_US + 1)
    assert claims == TokenClaims(
        order_id="ord_1001",
        source="shop",
        issued_at_us=NOW_US,
        expires_at_us=issued.expires_at_us,
        token_id=payload["n"],
    )


def test_token_id_is_stable_per_token_and_unique_per_issue() -> None:
    first = issue_token(SECRET, "ord_1", "shop", NOW_US, TTL)
    second = issue_token(SECRET, "ord_1", "shop", NOW_US, TTL)
    assert first.token != second.token
    one, again = read_claims(first.token), read_claims(first.token)
    other = read_claims(second.token)
    assert one is not None and again is not None and other is not None
    assert one.token_id == again.token_id != other.token_id
    assert len(one.token_id) == 32 and int(one.token_id, 16) >= 0
    fixed = issue_token(SECRET, "ord_1", "shop", NOW_US, TTL, nonce="0" * 32)
    assert verify_token([SECRET], fixed.token, "shop", NOW_US) is not None
    assert read_claims(fixed.token) == verify_token([SECRET], fixed.token, "shop", NOW_US)


def test_tampered_payload_is_refused() -> None:
    token = issue_token(SECRET, "ord_1", "shop", NOW_US, TTL).token
    prefix, payload_b64, sig_b64 = token.split(".")
    payload = json.loads(unb64(payload_b64))
    for change in ({"o": "ord_2"}, {"s": "other"}, {"exp": payload["exp"] * 2}):
        forged = f"{prefix}.{b64(json.dumps({**payload, **change}).encode())}.{sig_b64}"
        assert verify_token([SECRET], forged, "shop", NOW_US) is None, change
    # One character of the payload changed.
    flipped = payload_b64[:10] + ("A" if payload_b64[10] != "A" else "B") + payload_b64[11:]
    assert verify_token([SECRET], f"{prefix}.{flipped}.{sig_b64}", "shop", NOW_US) is None


def test_tampered_signature_is_refused() -> None:
    token = issue_token(SECRET, "ord_1", "shop", NOW_US, TTL).token
    prefix, payload_b64, sig_b64 = token.split(".")
    sig = bytearray(unb64(sig_b64))
    sig[0] ^= 1
    assert (
        verify_token([SECRET], f"{prefix}.{payload_b64}.{b64(bytes(sig))}", "shop", NOW_US) is None
    )
    # The same signature bytes spelled differently (non-zero unused bits) are refused too,
    # so one token has exactly one spelling.
    index = B64_ALPHABET.index(sig_b64[-1])
    respelled = sig_b64[:-1] + B64_ALPHABET[index ^ 1]  # flips one of the 2 unused bits
    assert unb64(respelled) == unb64(sig_b64)
    assert verify_token([SECRET], f"{prefix}.{payload_b64}.{respelled}", "shop", NOW_US) is None


def test_wrong_secret_and_no_secret() -> None:
    token = issue_token(OTHER, "ord_1", "shop", NOW_US, TTL).token
    assert verify_token([SECRET], token, "shop", NOW_US) is None
    assert verify_token([], token, "shop", NOW_US) is None
    assert verify_token([b""], token, "shop", NOW_US) is None
    with pytest.raises(ValueError):
        issue_token(b"", "ord_1", "shop", NOW_US, TTL)


def test_wrong_source_is_refused() -> None:
    token = issue_token(SECRET, "ord_1", "shop", NOW_US, TTL).token
    assert verify_token([SECRET], token, "shop2", NOW_US) is None
    assert verify_token([SECRET], token, "shop", NOW_US) is not None


def test_expiry_at_exactly_the_edge() -> None:
    clock = ManualClock(NOW_US)
    issued = issue_token(SECRET, "ord_1", "shop", clock.now_us(), 60)
    clock.advance(60 - 0.000001)  # one microsecond before the edge
    assert clock.now_us() == issued.expires_at_us - 1
    assert verify_token([SECRET], issued.token, "shop", clock.now_us()) is not None
    clock.advance(0.000001)  # exactly at the edge: expired
    assert clock.now_us() == issued.expires_at_us
    assert verify_token([SECRET], issued.token, "shop", clock.now_us()) is None
    # Reading the claims does not check expiry (the processor needs them after it).
    claims = read_claims(issued.token)
    assert claims is not None and claims.expires_at_us == clock.now_us()


def test_rotation_accepts_the_previous_secret() -> None:
    old_token = issue_token(OTHER, "ord_old", "shop", NOW_US, TTL).token
    new_token = issue_token(SECRET, "ord_new", "shop", NOW_US, TTL).token
    rotated = [SECRET, OTHER]  # the new one signs, the previous one still verifies
    assert verify_token(rotated, old_token, "shop", NOW_US) is not None
    assert verify_token(rotated, new_token, "shop", NOW_US) is not None
    assert verify_token([SECRET], old_token, "shop", NOW_US) is None


@pytest.mark.parametrize(
    "token",
    [
        "",
        "ct1",
        "ct1..",
        "ct1.abc",
        "ct1.a.b.c",
        "ct2.e30." + "A" * 43,
        "CT1.e30." + "A" * 43,
        "ct1.e30=." + "A" * 43,
        "ct1.e30." + "A" * 42,
        "ct1.e30." + "A" * 44,
        "ct1.e+0." + "A" * 43,
        "ct1.e30." + "A" * 42 + "/",
        "ct1." + "A" * 5 + "." + "A" * 43,
        "x" * (MAX_TOKEN_CHARS + 1),
        "ct1.\u00e9." + "A" * 43,
    ],
)
def test_malformed_strings(token: str) -> None:
    assert verify_token([SECRET], token, "shop", NOW_US) is None
    assert read_claims(token) is None


def test_non_strings_are_malformed() -> None:
    for value in (None, 5, b"ct1.x.y", ["ct1"], {"t": 1}):
        assert verify_token([SECRET], value, "shop", NOW_US) is None
        assert read_claims(value) is None


@pytest.mark.parametrize(
    "payload",
    [
        b"not json",
        b"[]",
        {"o": "x", "s": "shop", "iat": NOW_US, "exp": NOW_US + 10},  # no nonce
        {"o": "x", "s": "shop", "iat": NOW_US, "exp": NOW_US + 10, "n": "ab"},
        {"o": "x", "s": "shop", "iat": NOW_US, "exp": NOW_US + 10, "n": "A" * 32},
        {"o": "x", "s": "shop", "iat": NOW_US, "exp": NOW_US + 10, "n": "0" * 32, "extra": 1},
        {"o": 5, "s": "shop", "iat": NOW_US, "exp": NOW_US + 10, "n": "0" * 32},
        {"o": "x", "s": "shop", "iat": NOW_US, "exp": True, "n": "0" * 32},
        {"o": "x", "s": "shop", "iat": NOW_US, "exp": 1.5e18, "n": "0" * 32},
        {"o": "x", "s": "shop", "iat": NOW_US, "exp": NOW_US, "n": "0" * 32},  # exp <= iat
    ],
)
def test_signed_but_malformed_payloads(payload: Any) -> None:
    token = signed(SECRET, payload)
    assert verify_token([SECRET], token, "shop", NOW_US - 1) is None
    assert read_claims(token) is None


def test_hand_signed_well_formed_token_verifies() -> None:
    payload = {"o": "x", "s": "shop", "iat": NOW_US, "exp": NOW_US + 10, "n": "0" * 32}
    assert verify_token([SECRET], signed(SECRET, payload), "shop", NOW_US) is not None


def test_long_order_id_fits_in_a_token() -> None:
    order_id = "\U0001f600" * 256  # 256 printable characters of 4 UTF-8 bytes
    token = issue_token(SECRET, order_id, "default", NOW_US, TTL).token
    assert len(token) <= MAX_TOKEN_CHARS
    claims = verify_token([SECRET], token, "default", NOW_US)
    assert claims is not None and claims.order_id == order_id


# -- the collector's check: validate_event ---------------------------------------------


def facts(**kw: Any) -> IngestFacts:
    base: dict[str, Any] = {
        "source": "shop",
        "key_role": "server",
        "received_at_us": NOW_US,
        "token_secrets": (SECRET, OTHER),
    }
    base.update(kw)
    return IngestFacts(**base)


def body(token: object) -> dict[str, Any]:
    return {"event_id": "e1", "event_name": "Purchase", "user_id": "u1", "conversion_token": token}


def outcome_codes(token: object, **kw: Any) -> list[str]:
    outcome = validate_event(body(token), facts(**kw), Rules())
    return [] if isinstance(outcome, Envelope) else [e.code for e in outcome]


def test_validate_accepts_a_genuine_token_and_keeps_it() -> None:
    token = issue_token(SECRET, "ord_1", "shop", NOW_US - 10, TTL).token
    outcome = validate_event(body(token), facts(), Rules())
    assert isinstance(outcome, Envelope) and outcome.conversion_token == token
    rotated = issue_token(OTHER, "ord_1", "shop", NOW_US, TTL).token
    assert outcome_codes(rotated) == []


def test_validate_refuses_bad_tokens() -> None:
    good = issue_token(SECRET, "ord_1", "shop", NOW_US, TTL)
    forged = issue_token(b"x" * 32, "ord_1", "shop", NOW_US, TTL).token
    invalid = [codes.CONVERSION_TOKEN_INVALID]
    assert outcome_codes(forged) == invalid
    assert outcome_codes(good.token[:-2] + "AA") == invalid
    assert outcome_codes(good.token, source="other") == invalid
    assert outcome_codes(good.token, received_at_us=good.expires_at_us) == invalid
    assert outcome_codes(good.token, received_at_us=good.expires_at_us - 1) == []
    assert outcome_codes("whatever") == invalid
    assert outcome_codes(5) == invalid
    assert outcome_codes("") == invalid
    # Without configured secrets every token is invalid.
    assert outcome_codes(good.token, token_secrets=()) == invalid
    # Absent or null: no token, no error.
    assert outcome_codes(None) == []


def test_facts_repr_hides_the_secrets() -> None:
    text = repr(facts())
    assert "sss" not in text and "ooo" not in text and "2 hidden" in text
