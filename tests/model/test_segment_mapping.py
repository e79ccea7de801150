"""The Segment-spec mapping (model/segment.py), field by field, and its exact money."""

from __future__ import annotations

import decimal
from decimal import Decimal
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from convtrack.model.event import Envelope
from convtrack.model.pii import hash_user
from convtrack.model.segment import (
    BatchShared,
    is_segment,
    to_minor_units,
    to_native,
    validate_segment,
)
from convtrack.model.timeparse import parse_timestamp_us
from convtrack.model.validate import MAX_VALUE, FieldError, IngestFacts, Rules

RECEIVED = "2026-11-28T17:00:10.000Z"
RECEIVED_US = parse_timestamp_us(RECEIVED)
assert RECEIVED_US is not None
FACTS = IngestFacts(source="default", key_role="server", received_at_us=RECEIVED_US)


def check(
    message: dict[str, Any], raw: bytes | None = None, **kw: Any
) -> Envelope | list[FieldError]:
    text = raw if raw is not None else msgspec.json.encode(message)
    return validate_segment(message, FACTS, Rules(), raw=text, **kw)


def accepted(message: dict[str, Any], **kw: Any) -> Envelope:
    outcome = check(message, **kw)
    assert isinstance(outcome, Envelope), outcome
    return outcome


def codes_of(message: dict[str, Any] | bytes, **kw: Any) -> list[tuple[str, str]]:
    if isinstance(message, bytes):
        outcome = check(msgspec.json.decode(message), raw=message, **kw)
    else:
        outcome = check(message, **kw)
    assert isinstance(outcome, list), outcome
    return [(e.field, e.code) for e in outcome]


def order(**properties: Any) -> dict[str, Any]:
    return {
        "type": "track",
        "event": "Order Completed",
        "messageId": "m1",
        "userId": "u1",
        "properties": properties,
    }


# -- told apart per event ------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "segment"),
    [
        ({"event_name": "Purchase", "user_id": "u"}, False),
        ({"event_name": "Purchase", "userId": "u", "type": "track"}, False),  # ours wins
        ({"session_id": "s"}, False),
        ({"type": "track"}, True),
        ({"event": "x"}, True),
        ({"messageId": "m"}, True),
        ({"userId": "u"}, True),
        ({"anonymousId": "a"}, True),
    ],
)
def test_told_apart_by_its_keys(body: dict[str, Any], segment: bool) -> None:
    assert is_segment(body) is segment


# -- field by field --------------------------------------------------------------------


def test_track_fields_map_one_by_one() -> None:
    message = {
        "type": "track",
        "event": "Order Completed",
        "messageId": "msg-1",
        "userId": "u_1",
        "anonymousId": "anon_1",
        "properties": {
            "revenue": 49.99,
            "currency": "usd",
            "campaign_id": "spring",
            "products": [{"product_id": "sku_1", "price": 49.99}],
        },
        "context": {
            "ip": "203.0.113.9",
            "userAgent": "Mozilla/5.0 Chrome",
            "page": {"url": "https://s.example/t?gclid=G1&utm_source=g", "referrer": "https://r/"},
            "campaign": {"source": "g", "medium": "cpc", "name": "spring", "term": "t",
                         "content": "c", "utm_extra": "dropped"},
            "library": {"name": "analytics-python", "version": "2.4.0"},
            "locale": "en-US",
            "device": {"advertisingId": "dropped"},
            "traits": {"email": "Jane@Example.com", "phone": "+1 555 0100"},
        },
        "integrations": {"All": True},
        "_metadata": {"bundled": []},
    }  # fmt: skip
    envelope = accepted(message)
    assert envelope.event_id == "msg-1" and not envelope.event_id_derived
    assert envelope.event_name == "Order Completed"
    assert envelope.user_id == "u_1"
    assert envelope.session_id == "anon_1"
    assert (envelope.value, envelope.currency) == (4999, "USD")
    assert envelope.campaign_id == "spring"
    assert envelope.properties == message["properties"]  # products[] kept
    assert envelope.context == {
        "ip": "203.0.113.9",
        "user_agent": "Mozilla/5.0 Chrome",
        "page_url": "https://s.example/t?gclid=G1&utm_source=g",
        "referrer": "https://r/",
        "campaign": {"source": "g", "medium": "cpc", "name": "spring", "term": "t", "content": "c"},
        "library": {"name": "analytics-python", "version": "2.4.0"},
        "locale": "en-US",
    }
    assert envelope.user == hash_user({"email": "Jane@Example.com", "phone": "+1 555 0100"})
    assert "Jane@Example.com" not in msgspec.json.encode(envelope).decode()
    assert envelope.extra == {}
    assert envelope.event_time_us == RECEIVED_US  # no timestamp: the time received


def test_identify_traits_become_hashed_user_fields() -> None:
    message = {
        "type": "identify",
        "userId": "u_1",
        "traits": {
            "email": "jane@example.com", "firstName": "Jane", "last_name": "Doe",
            "address": {"city": "Berlin", "state": "BE", "postalCode": "10115", "country": "DE"},
            "plan": "pro", "logins": 5,
        },
        "context": {"traits": {"email": "old@example.com", "phone": "+49 30 1234"}},
    }  # fmt: skip
    envelope = accepted(message)
    assert envelope.event_name == "identify"
    assert envelope.user == hash_user(
        {
            "email": "jane@example.com", "phone": "+49 30 1234", "first_name": "Jane",
            "last_name": "Doe", "city": "Berlin", "state": "BE", "zip": "10115", "country": "DE",
        }
    )  # fmt: skip
    assert "plan" not in msgspec.json.encode(envelope).decode()


@pytest.mark.parametrize(
    ("traits", "expected"),
    [
        ({"name": "Jane van Doe"}, {"first_name": "Jane", "last_name": "van Doe"}),
        ({"name": "Cher"}, {"first_name": "Cher"}),
        ({"name": "Jane Doe", "firstName": "J"}, {"first_name": "J"}),
        ({"zip": "10115", "postal_code": "10117"}, {"zip": "10115"}),  # the table's order
        ({"address": {"city": "A"}, "city": "B"}, {"city": "B"}),  # top level wins
        ({"email": "", "phone": None, "city": True}, {}),
    ],
)
def test_trait_spellings(traits: dict[str, Any], expected: dict[str, str]) -> None:
    envelope = accepted({"type": "identify", "userId": "u", "traits": traits})
    assert envelope.user == hash_user(expected)


def test_page_and_screen_are_page_views() -> None:
    page = accepted(
        {"type": "page", "anonymousId": "a1", "name": "Pricing", "category": "Docs",
         "properties": {"url": "https://s/p?utm_source=news", "referrer": "https://r/"}}
    )  # fmt: skip
    assert page.event_name == "page_view" and page.session_id == "a1" and page.user_id is None
    assert page.context["page_url"] == "https://s/p?utm_source=news"
    assert page.context["referrer"] == "https://r/"
    assert page.properties["name"] == "Pricing" and page.properties["category"] == "Docs"
    ctx_wins = accepted(
        {"type": "page", "anonymousId": "a1", "properties": {"url": "https://s/prop"},
         "context": {"page": {"url": "https://s/ctx"}}}
    )  # fmt: skip
    assert ctx_wins.context["page_url"] == "https://s/ctx"
    assert accepted({"type": "screen", "anonymousId": "a1", "name": "Home"}).event_name == (
        "page_view"
    )
    # A track's properties.url is its own business, not the page.
    track = accepted({"type": "track", "event": "x", "userId": "u", "properties": {"url": "u"}})
    assert "page_url" not in track.context


def test_the_route_gives_the_type_when_the_message_has_none() -> None:
    assert accepted({"userId": "u"}, default_type="identify").event_name == "identify"
    assert accepted({"anonymousId": "a"}, default_type="page").event_name == "page_view"
    assert accepted({"userId": "u", "event": "Signed Up"}).event_name == "Signed Up"
    assert accepted({"type": "TRACK", "userId": "u", "event": "e"}).event_name == "e"
    assert accepted({"type": None, "userId": "u"}, default_type="identify").event_name == (
        "identify"
    )
    assert codes_of({"type": 1, "userId": "u"}) == [("type", "type_unsupported")]
    assert codes_of({"type": "alias", "userId": "u", "previousId": "p"}) == [
        ("type", "type_unsupported")
    ]
    assert codes_of({"type": "group", "userId": "u", "groupId": "g"}) == [
        ("type", "type_unsupported")
    ]


def test_session_id_sources() -> None:
    rudder = accepted({"userId": "u", "event": "e", "anonymousId": "a",
                       "context": {"sessionId": 1700000000000}})  # fmt: skip
    assert rudder.session_id == "1700000000000"
    ours = accepted({"userId": "u", "event": "e", "anonymousId": "a", "session_id": "s"})
    assert ours.session_id == "s"


def test_errors_name_the_segment_fields() -> None:
    assert codes_of({"type": "track", "messageId": "m"}) == [
        ("event", "event_name_missing"),
        ("userId", "user_id_missing"),
    ]
    assert codes_of({"type": "track", "event": "e", "userId": "u", "messageId": ""}) == [
        ("messageId", "event_id_invalid")
    ]
    assert codes_of({"type": "track", "event": "e", "userId": "u", "properties": [1]}) == [
        ("properties", "properties_invalid")
    ]
    assert codes_of({"event": "e", "userId": "u", "context": "x"}) == [
        ("context", "context_invalid")
    ]
    assert codes_of({"event": "e", "userId": "u", "context": {"page": "x"}}) == [
        ("context.page", "context_invalid")
    ]
    assert codes_of({"event": "e", "userId": "u", "context": {"ip": 5}}) == [
        ("context.ip", "context_invalid")
    ]


def test_unknown_members_are_kept_like_a_native_events() -> None:
    envelope = accepted({"event": "e", "userId": "u", "order_ref": "o-1", "channel": "server"})
    assert envelope.extra == {"order_ref": "o-1"}


# -- time ------------------------------------------------------------------------------


def test_clock_skew_correction() -> None:
    # The sender's clock is 1 hour fast: it called at 18:00:00 (its clock) and sent at
    # 18:00:05 (its clock); received at 17:00:10 (ours): the event happened at 17:00:05.
    skewed = {"event": "e", "userId": "u", "timestamp": "2026-11-28T18:00:00Z",
              "sentAt": "2026-11-28T18:00:05Z"}  # fmt: skip
    assert accepted(skewed).event_time_us == parse_timestamp_us("2026-11-28T17:00:05Z")
    # originalTimestamp wins over timestamp; the batch's sentAt stands in for the message's.
    shared = BatchShared(sent_at="2026-11-28T17:00:09.500Z")
    both = {"event": "e", "userId": "u", "originalTimestamp": "2026-11-28T17:00:09Z",
            "timestamp": "2020-01-01T00:00:00Z"}  # fmt: skip
    assert accepted(both, shared=shared).event_time_us == parse_timestamp_us(
        "2026-11-28T17:00:09.500Z"
    )
    # Without sentAt: as sent.
    plain = {"event": "e", "userId": "u", "timestamp": "2026-11-28T16:00:00+00:00"}
    assert accepted(plain).event_time_us == parse_timestamp_us("2026-11-28T16:00:00Z")


def test_time_errors() -> None:
    assert codes_of({"event": "e", "userId": "u", "timestamp": "yesterday"}) == [
        ("timestamp", "timestamp_invalid")
    ]
    assert codes_of(
        {"event": "e", "userId": "u", "timestamp": "2026-11-28T17:00:00Z", "sentAt": "now"}
    ) == [("sentAt", "timestamp_invalid")]
    # Corrected into the future (timestamp an hour after sentAt): the native limit applies.
    assert codes_of(
        {"event": "e", "userId": "u", "timestamp": "2026-11-28T18:00:00Z",
         "sentAt": "2026-11-28T17:00:00Z"}
    ) == [("timestamp", "timestamp_in_future")]  # fmt: skip


def test_fingerprint_ignores_sent_at() -> None:
    base = {"event": "e", "userId": "u", "timestamp": "2026-11-28T17:00:00Z"}
    first = accepted({**base, "sentAt": "2026-11-28T17:00:01Z"})
    retry = accepted({**base, "sentAt": "2026-11-28T17:00:07Z"})
    assert first.event_id == retry.event_id and first.event_id.startswith("fp-")
    assert first.event_id_derived
    other = accepted({**base, "event": "f"})
    assert other.event_id != first.event_id


# -- money -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "currency", "minor"),
    [
        (b"49.99", "USD", 4999),
        (b"19.99", "usd", 1999),
        (b"19.990000", "USD", 1999),
        (b"1e2", "USD", 10000),
        (b"1E+2", "JPY", 100),
        (b"-0", "USD", 0),
        (b"-0.0", "USD", 0),
        (b"0", "KWD", 0),
        (b"12.5", "KWD", 12500),
        (b"1.234", "kwd", 1234),
        (b"1000", "JPY", 1000),
        (b"0.1", "USD", 10),
        (b"10000000000", "USD", MAX_VALUE),
    ],
)
def test_money_is_exact(text: bytes, currency: str, minor: int) -> None:
    raw = b'{"event":"e","userId":"u","properties":{"revenue":%s,"currency":"%s"}}' % (
        text,
        currency.encode(),
    )
    envelope = check(msgspec.json.decode(raw), raw=raw)
    assert isinstance(envelope, Envelope), envelope
    assert (envelope.value, envelope.currency) == (minor, currency.upper())


@pytest.mark.parametrize(
    ("text", "currency", "code"),
    [
        (b"0.30000000000000004", "USD", "value_too_precise"),  # 0.1 + 0.2
        (b"19.999", "USD", "value_too_precise"),
        (b"1.5", "JPY", "value_too_precise"),
        (b"1.2345", "KWD", "value_too_precise"),
        (b"1e-400", "USD", "value_too_precise"),  # a float 0.0, but not what was sent
        (b"0.1000000000000000055511151231257827", "USD", "value_too_precise"),  # float(0.1)
        (b"-5", "USD", "value_negative"),
        (b"-0.01", "USD", "value_negative"),
        (b"10000000000.01", "USD", "value_too_large"),
        (b"123456789012345678901234567890", "USD", "value_too_large"),
        (b"1e30", "USD", "value_too_large"),
        (b'"49.99"', "USD", "value_not_number"),
        (b"true", "USD", "value_not_number"),
        (b"{}", "USD", "value_not_number"),
    ],
)
def test_money_errors(text: bytes, currency: str, code: str) -> None:
    raw = b'{"event":"e","userId":"u","properties":{"revenue":%s,"currency":"%s"}}' % (
        text,
        currency.encode(),
    )
    assert codes_of(raw) == [("properties.revenue", code)]


def test_revenue_else_value_else_total() -> None:
    assert accepted(order(revenue=1, value=2, total=3, currency="USD")).value == 100
    assert accepted(order(value=2, total=3, currency="USD")).value == 200
    assert accepted(order(total=3, currency="USD")).value == 300
    assert accepted(order(revenue=None, total=3, currency="USD")).value == 300
    assert codes_of(order(total=1.001, currency="USD")) == [
        ("properties.total", "value_too_precise")
    ]
    # A price with a currency and no amount (Product Viewed): no value, currency untouched.
    viewed = accepted(order(price=9.99, currency="usd"))
    assert (viewed.value, viewed.currency) == (None, None)
    assert viewed.properties == {"price": 9.99, "currency": "usd"}


def test_currency_rules_and_default() -> None:
    assert codes_of(order(revenue=5)) == [("properties.currency", "currency_missing")]
    assert accepted(order(revenue=5), default_currency="EUR").currency == "EUR"
    assert accepted(order(revenue=5, currency="gbp"), default_currency="EUR").currency == "GBP"
    assert accepted(order(revenue=5, currency="Jpy")).value == 5
    assert codes_of(order(revenue=5, currency="XYZ")) == [
        ("properties.currency", "currency_unknown")
    ]
    assert codes_of(order(revenue=5, currency=840)) == [("properties.currency", "currency_unknown")]
    assert codes_of(order(revenue=1.001, currency="XYZ")) == [
        ("properties.revenue", "value_too_precise"),
        ("properties.currency", "currency_unknown"),
    ]


def test_without_the_text_the_shortest_float_decimal_is_used() -> None:
    message = order(revenue=49.99, currency="USD")
    outcome = validate_segment(message, FACTS, Rules(), raw=None)
    assert isinstance(outcome, Envelope) and outcome.value == 4999


CURRENCIES = {"USD": 2, "JPY": 0, "KWD": 3, "CLF": 4}


def expected_minor(amount: Decimal, digits: int) -> int | str:
    """The reference: plain Decimal arithmetic with room for every digit."""
    with decimal.localcontext() as ctx:
        ctx.prec = 2000
        if amount == 0:
            return 0
        if amount < 0:
            return "value_negative"
        scaled = amount.scaleb(digits)
        if scaled != scaled.to_integral_value():
            return "value_too_precise"
        if scaled > MAX_VALUE:
            return "value_too_large"
        return int(scaled)


amounts = st.one_of(
    st.decimals(allow_nan=False, allow_infinity=False, min_value=-(10**6), max_value=10**14),
    st.decimals(allow_nan=False, allow_infinity=False, places=2, min_value=0, max_value=10**10),
    st.integers(min_value=0, max_value=10**5).map(lambda cents: Decimal(cents).scaleb(-2)),
    st.floats(min_value=0, max_value=1e12, allow_nan=False).map(lambda f: Decimal(repr(f))),
)


@settings(max_examples=400, deadline=None)
@given(amount=amounts, currency=st.sampled_from(sorted(CURRENCIES)))
def test_money_matches_decimal_arithmetic(amount: Decimal, currency: str) -> None:
    text = str(amount).encode()  # e.g. 19.99, 1E+2, 0E-7, -0.00: all JSON numbers
    raw = b'{"event":"e","userId":"u","properties":{"value":%s,"currency":"%s"}}' % (
        text,
        currency.encode(),
    )
    want = expected_minor(amount, CURRENCIES[currency])
    assert (
        to_minor_units(msgspec.json.Decoder(float_hook=Decimal).decode(text), CURRENCIES[currency])
        == want
    )
    outcome = check(msgspec.json.decode(raw), raw=raw)
    if isinstance(want, int):
        assert isinstance(outcome, Envelope), (text, outcome)
        assert (outcome.value, outcome.currency) == (want, currency)
    else:
        assert isinstance(outcome, list)
        assert [(e.field, e.code) for e in outcome] == [("properties.value", want)], text


def test_to_native_is_pure_and_leaves_the_message_alone() -> None:
    message = order(revenue=1, currency="usd")
    message["context"] = {"traits": {"email": "a@b.c"}}
    before = msgspec.json.encode(message)
    native, errors, which = to_native(message, FACTS)
    assert msgspec.json.encode(message) == before
    assert errors == [] and which == "revenue"
    assert native["user"] == {"email": "a@b.c"}  # raw here; validate_event hashes it


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=12,
)
segment_keys = st.sampled_from(
    ["type", "event", "messageId", "userId", "anonymousId", "properties", "context", "traits",
     "timestamp", "originalTimestamp", "sentAt", "name", "revenue", "currency", "session_id"]
)  # fmt: skip
shaped_values = st.one_of(
    json_values,
    st.sampled_from(["track", "identify", "page", "screen", "alias", "2026-11-28T17:00:00Z"]),
    st.fixed_dictionaries(
        {},
        optional={
            "revenue": json_values, "value": json_values, "total": json_values,
            "currency": st.sampled_from(["usd", "JPY", "XYZ", ""]) | json_values,
            "url": json_values,
        },
    ),
    st.fixed_dictionaries(
        {},
        optional={
            "ip": json_values, "userAgent": json_values, "page": json_values,
            "campaign": json_values, "traits": json_values, "sessionId": json_values,
        },
    ),
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(
    message=st.dictionaries(segment_keys, shaped_values, min_size=1, max_size=8),
    shared=st.builds(BatchShared, sent_at=json_values, context=json_values),
)
def test_any_message_gets_an_envelope_or_field_errors(
    message: dict[str, Any], shared: BatchShared
) -> None:
    """Never an exception (a 500): whatever a message holds, an answer with codes."""
    message.setdefault("userId", "u")
    raw = msgspec.json.encode(message)
    outcome = validate_segment(msgspec.json.decode(raw), FACTS, Rules(), raw=raw, shared=shared)
    if isinstance(outcome, list):
        assert outcome and all(e.code and e.field for e in outcome)
    else:
        assert isinstance(outcome.event_id, str)
