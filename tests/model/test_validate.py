"""Unit tests for event validation: every code and its edges."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from convtrack.model import codes
from convtrack.model.event import Envelope
from convtrack.model.validate import (
    MAX_VALUE,
    FieldError,
    IngestFacts,
    Rules,
    fingerprint,
    validate_event,
    within_limits,
)

NOW_US = 1_796_000_000_000_000  # 2026-11-30T00:53:20Z
RULES = Rules()


def facts(**kw: Any) -> IngestFacts:
    base: dict[str, Any] = {"source": "default", "key_role": "server", "received_at_us": NOW_US}
    base.update(kw)
    return IngestFacts(**base)


def event(**kw: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"event_id": "e1", "event_name": "Purchase", "user_id": "u1"}
    body.update(kw)
    return {k: v for k, v in body.items() if v is not None}


def error_codes(body: dict[str, Any], **fkw: Any) -> list[str]:
    outcome = validate_event(body, facts(**fkw), RULES)
    assert isinstance(outcome, list), outcome
    return [e.code for e in outcome]


def ok(body: dict[str, Any], **fkw: Any) -> Envelope:
    outcome = validate_event(body, facts(**fkw), RULES)
    assert isinstance(outcome, Envelope), outcome
    return outcome


def iso(offset_secs: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(NOW_US / 1e6 + offset_secs, tz=UTC).isoformat()


def test_minimal_event_is_accepted_and_timestamp_defaults_to_receive_time() -> None:
    env = ok(event())
    assert env.event_time_us == NOW_US
    assert env.received_at_us == NOW_US
    assert env.source == "default"


def test_event_name_missing_or_empty() -> None:
    assert error_codes(event(event_name=None)) == [codes.EVENT_NAME_MISSING]
    assert error_codes(event(event_name="")) == [codes.EVENT_NAME_MISSING]
    assert error_codes(event(event_name=5)) == [codes.EVENT_NAME_INVALID]
    assert error_codes(event(event_name="   ")) == [codes.EVENT_NAME_MISSING]


def test_user_or_session_required() -> None:
    assert error_codes(event(user_id=None)) == [codes.USER_ID_MISSING]
    assert ok(event(user_id=None, session_id="s1")).session_id == "s1"
    assert ok(event(user_id=42)).user_id == "42"
    assert error_codes(event(user_id=True)) == [codes.USER_ID_INVALID]
    assert error_codes(event(user_id=["a"])) == [codes.USER_ID_INVALID]


@pytest.mark.parametrize(
    ("offset_secs", "expected"),
    [
        (9 * 60, None),
        (11 * 60, codes.TIMESTAMP_IN_FUTURE),
        (-6 * 86400, None),
        (-8 * 86400, codes.TIMESTAMP_TOO_OLD),
    ],
)
def test_timestamp_window_edges(offset_secs: int, expected: str | None) -> None:
    body = event(timestamp=iso(offset_secs))
    if expected is None:
        assert ok(body).event_time_us == NOW_US + offset_secs * 1_000_000
    else:
        assert error_codes(body) == [expected]


def test_timestamp_limit_is_a_setting() -> None:
    body = event(timestamp=iso(-3600))
    outcome = validate_event(body, facts(), Rules(max_event_age_secs=1800))
    assert isinstance(outcome, list) and outcome[0].code == codes.TIMESTAMP_TOO_OLD


def test_timestamp_epoch_millis() -> None:
    ms = NOW_US // 1000 - 5000
    assert ok(event(timestamp=ms)).event_time_us == ms * 1000


@pytest.mark.parametrize(
    "value",
    [
        "yesterday",
        "2026-11-28",
        "2026-11-28T17:00:00",
        "20261128T170000Z",
        "2026-11-28T17:00Z",
        True,
        1.5,
        "2026-13-01T00:00:00Z",
        {},
    ],
)
def test_timestamp_invalid(value: object) -> None:
    assert error_codes(event(timestamp=value)) == [codes.TIMESTAMP_INVALID]


def test_timestamp_with_offset_is_converted_to_utc() -> None:
    z = ok(event(timestamp="2026-11-28T12:00:00Z")).event_time_us
    plus = ok(event(timestamp="2026-11-28T14:00:00+02:00")).event_time_us
    assert z == plus


def test_money_rules() -> None:
    assert ok(event(value=4999, currency="USD")).value == 4999
    assert ok(event(value=500, currency="JPY")).value == 500  # JPY has no minor unit
    assert ok(event(value=0, currency="EUR")).value == 0
    assert error_codes(event(value="4999", currency="USD")) == [codes.VALUE_NOT_NUMBER]
    assert error_codes(event(value=True, currency="USD")) == [codes.VALUE_NOT_NUMBER]
    assert error_codes(event(value=49.99, currency="USD")) == [codes.VALUE_NOT_INTEGER_MINOR_UNITS]
    assert error_codes(event(value=50.0, currency="USD")) == [codes.VALUE_NOT_INTEGER_MINOR_UNITS]
    assert error_codes(event(value=-1, currency="USD")) == [codes.VALUE_NEGATIVE]
    assert error_codes(event(value=2**63, currency="USD")) == [codes.VALUE_TOO_LARGE]


@pytest.mark.parametrize("value", [MAX_VALUE + 1, 2**63 - 1, 2**63, 10**30])
def test_a_value_a_total_cannot_hold_is_too_large(value: int) -> None:
    """One event may not carry more than MAX_VALUE minor units: with it, a total of
    millions of such events still fits the hot stores' signed 64-bit sums."""
    assert error_codes(event(value=value, currency="USD")) == [codes.VALUE_TOO_LARGE]


def test_the_largest_value_is_accepted_and_leaves_room_in_a_64_bit_total() -> None:
    assert MAX_VALUE == 10**12
    assert ok(event(value=MAX_VALUE, currency="USD")).value == MAX_VALUE
    assert (2**63 - 1) // MAX_VALUE > 9_000_000  # events at the maximum before a total overflows
    assert error_codes(event(value=100)) == [codes.CURRENCY_MISSING]
    assert error_codes(event(currency="USD")) == [codes.VALUE_MISSING]
    assert error_codes(event(value=1, currency="usd")) == [codes.CURRENCY_NOT_UPPERCASE]
    assert error_codes(event(value=1, currency="Usd")) == [codes.CURRENCY_NOT_UPPERCASE]
    assert error_codes(event(value=1, currency="XYZ")) == [codes.CURRENCY_UNKNOWN]
    assert error_codes(event(value=1, currency=840)) == [codes.CURRENCY_UNKNOWN]
    assert error_codes(event(value=1, currency="XXX")) == [codes.CURRENCY_UNKNOWN]


def test_event_id_from_query_and_mismatch() -> None:
    assert ok(event(event_id=None), query_event_id="q1").event_id == "q1"
    assert ok(event(event_id="same"), query_event_id="same").event_id == "same"
    assert error_codes(event(event_id="a"), query_event_id="b") == [codes.EVENT_ID_MISMATCH]
    assert error_codes(event(event_id="")) == [codes.EVENT_ID_INVALID]
    assert error_codes(event(event_id="x" * 129)) == [codes.EVENT_ID_INVALID]
    assert error_codes(event(event_id="a\nb")) == [codes.EVENT_ID_INVALID]
    assert error_codes(event(event_id={"a": 1})) == [codes.EVENT_ID_INVALID]


def test_fingerprint_is_deterministic_and_content_sensitive() -> None:
    body = event(event_id=None, value=100, currency="USD", properties={"b": 1, "a": 2})
    first = ok(dict(body))
    reordered = ok({k: body[k] for k in reversed(list(body))})
    assert first.event_id == reordered.event_id and first.event_id_derived
    assert ok(event(event_id=None, value=101, currency="USD")).event_id != first.event_id
    assert fingerprint(body, "other") != fingerprint(body, "default")


def test_properties_limits() -> None:
    assert ok(event(properties={"sku": "a", "nested": {"x": [1, 2]}})).properties["sku"] == "a"
    assert error_codes(event(properties=[1, 2])) == [codes.PROPERTIES_INVALID]
    assert error_codes(event(properties="x")) == [codes.PROPERTIES_INVALID]
    deep: dict[str, Any] = {}
    node = deep
    for _ in range(RULES.max_depth + 1):
        node["d"] = {}
        node = node["d"]
    assert error_codes(event(properties=deep)) == [codes.PROPERTIES_INVALID]
    wide = {f"k{i}": i for i in range(RULES.max_properties + 1)}
    assert error_codes(event(properties=wide)) == [codes.PROPERTIES_INVALID]
    assert error_codes(event(properties={"s": "x" * (RULES.max_string_chars + 1)})) == [
        codes.PROPERTIES_INVALID
    ]


def test_campaign_id_top_level_or_properties() -> None:
    assert ok(event(campaign_id="spring")).campaign_id == "spring"
    assert ok(event(properties={"campaign_id": "p"})).campaign_id == "p"
    assert ok(event(campaign_id="top", properties={"campaign_id": "p"})).campaign_id == "top"
    assert ok(event()).campaign_id is None
    assert error_codes(event(campaign_id={"x": 1})) == [codes.CAMPAIGN_ID_INVALID]


def test_user_contact_fields_are_hashed_on_arrival() -> None:
    env = ok(event(user={"email": " Jane.Doe@Example.com ", "phone": "+1 (555) 123-4567"}))
    assert env.user["email"] == "86e0b9e56c17cc4d12387e1949b85053fbe73bc3ce5a1188713a9d300cc6133d"
    assert env.user["phone"] == "d6736136ea896c1bfdc553e0e86e702c70d060d805696ca3e4e9e0961353860a"
    assert env.user["phone_e164"] == (
        "8a59780bb8cd2ba022bfa5ba2ea3b6e07af17a7d8b30c1f9b3390e36f69019e4"
    )
    assert "Jane" not in repr(env) and "555" not in repr(env)
    gmail = ok(event(user={"email": "jane.doe@gmail.com"}))
    assert gmail.user["email_google"] == (
        "d6117306485ed0e50afab3ac871e98f81699151f30281527d63ff5f233656c69"
    )
    assert error_codes(event(user={"ssn": "123"})) == [codes.USER_INVALID]
    assert error_codes(event(user="x")) == [codes.USER_INVALID]


def test_context_and_browser_defaults() -> None:
    env = ok(event(), key_role="write", client_ip="203.0.113.9", client_user_agent="UA/1")
    assert env.context["ip"] == "203.0.113.9" and env.context["user_agent"] == "UA/1"
    server = ok(event(), client_ip="10.0.0.1", client_user_agent="backend")
    assert "ip" not in server.context  # a backend's own address is not its user's
    given = ok(event(context={"ip": "198.51.100.1"}), key_role="write", client_ip="203.0.113.9")
    assert given.context["ip"] == "198.51.100.1"
    assert error_codes(event(context=[1])) == [codes.CONTEXT_INVALID]
    assert error_codes(event(context={"ip": 5})) == [codes.CONTEXT_INVALID]
    assert error_codes(event(context={"campaign": {"bogus": "x"}})) == [codes.CONTEXT_INVALID]


def test_click_ids_and_consent() -> None:
    env = ok(event(click_ids={"gclid": "abc"}, context={"click_ids": {"fbclid": "f"}}))
    assert env.click_ids == {"gclid": "abc", "fbclid": "f"}
    assert error_codes(event(click_ids={"nope": "x"})) == [codes.CLICK_IDS_INVALID]
    assert ok(event(consent={"ad_user_data": False})).consent == {"ad_user_data": False}
    assert error_codes(event(consent={"ad_user_data": "no"})) == [codes.CONSENT_INVALID]


def test_several_errors_are_reported_together() -> None:
    found = error_codes({"value": 49.99, "currency": "usd"})
    assert set(found) == {
        codes.EVENT_NAME_MISSING,
        codes.USER_ID_MISSING,
        codes.VALUE_NOT_INTEGER_MINOR_UNITS,
        codes.CURRENCY_NOT_UPPERCASE,
    }


def test_every_error_has_a_message() -> None:
    outcome = validate_event({}, facts(), RULES)
    assert isinstance(outcome, list)
    assert all(isinstance(e, FieldError) and e.message != e.code for e in outcome)


def test_unknown_top_level_fields_are_kept_not_dropped() -> None:
    env = ok(event(anonymous_id="anon-1"))
    assert env.extra == {"anonymous_id": "anon-1"}


# -- the byte-count shortcut past the tree walks --------------------------------------

SMALL_RULES = Rules(max_properties=12, max_depth=3, max_string_chars=120)
_json_scalars = st.none() | st.booleans() | st.integers() | st.text(max_size=30)
_json = st.recursive(
    _json_scalars,
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5)
    ),
    max_leaves=25,
)


@given(
    properties=_json,
    context=_json,
    extra=st.dictionaries(st.sampled_from(["a", "b", "[x", "{y:"]), _json, max_size=3),
)
@hsettings(max_examples=400, deadline=None)
def test_the_text_shortcut_never_changes_an_outcome(
    properties: Any, context: Any, extra: dict[str, Any]
) -> None:
    """With the event's JSON text, validation skips the walks only when the text proves
    they would pass: the outcome is the same as without it, limits hit or not."""
    body = {**event(properties=properties, context=context), **extra}
    raw = msgspec.json.encode(body)
    for rules in (SMALL_RULES, RULES):
        assert validate_event(body, facts(), rules, raw) == validate_event(body, facts(), rules)


def test_a_typical_event_takes_the_shortcut_and_one_near_a_limit_does_not() -> None:
    typical = event(
        properties={"order_id": "o-1", "items": 2, "skus": ["A", "B"]},
        context={"page_url": "https://shop.example/x", "campaign": {"source": "google"}},
    )
    assert within_limits(msgspec.json.encode(typical), RULES)
    deep: Any = "leaf"
    for _ in range(RULES.max_depth):
        deep = {"k": deep}
    assert not within_limits(msgspec.json.encode(event(properties=deep)), RULES)
    wide = event(properties={f"p{i}": i for i in range(RULES.max_properties)})
    assert not within_limits(msgspec.json.encode(wide), RULES)
    long_text = event(properties={"note": "x" * RULES.max_string_chars})
    assert not within_limits(msgspec.json.encode(long_text), RULES)
