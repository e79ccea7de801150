"""The Python SDK's pure parts: money, batch splitting, answer meanings, backoff."""

from __future__ import annotations

import json
import random
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from convtrack_sdk import InvalidEvent, RetryPolicy, minor_digits, to_minor_units
from convtrack_sdk._dispatch import batch_body, split
from convtrack_sdk._events import EventFactory, QueuedEvent
from convtrack_sdk._http import Answer, parse_retry_after
from convtrack_sdk._outcome import Delivered, Refused, Retry, Split, classify


@pytest.mark.parametrize(
    ("revenue", "currency", "minor"),
    [
        ("49.99", "USD", 4999),
        (Decimal("19.99"), "USD", 1999),
        (19.99, "USD", 1999),  # a float by its repr, "19.99"
        ("19.990", "USD", 1999),
        ("1e2", "USD", 10000),
        ("1E2", "JPY", 100),
        (1500, "JPY", 1500),
        ("1.234", "KWD", 1234),
        ("0.0001", "CLF", 1),
        (0, "EUR", 0),
    ],
)
def test_revenue_in_major_units_is_exact_minor_units(
    revenue: object, currency: str, minor: int
) -> None:
    assert to_minor_units(revenue, currency) == minor  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("revenue", "currency", "code"),
    [
        (0.1 + 0.2, "USD", "value_too_precise"),  # 0.30000000000000004
        ("19.999", "USD", "value_too_precise"),
        ("1.5", "JPY", "value_too_precise"),
        ("1.2345", "KWD", "value_too_precise"),
        ("-1", "USD", "value_negative"),
        ("abc", "USD", "value_not_number"),
        ("NaN", "USD", "value_not_number"),
        (float("inf"), "USD", "value_not_number"),
        (True, "USD", "value_not_number"),
        ("1e30", "USD", "value_too_large"),
        ("1e999999999", "USD", "value_too_large"),
    ],
)
def test_revenue_that_cannot_be_exact_is_refused(revenue: object, currency: str, code: str) -> None:
    with pytest.raises(InvalidEvent) as caught:
        to_minor_units(revenue, currency)  # type: ignore[arg-type]
    assert caught.value.code == code


@given(st.integers(min_value=0, max_value=10**15), st.sampled_from(["USD", "JPY", "KWD"]))
def test_minor_units_round_trip_through_their_decimal_text(minor: int, currency: str) -> None:
    digits = minor_digits(currency)
    text = str(Decimal(minor).scaleb(-digits))
    assert to_minor_units(text, currency) == minor


def test_events_are_numbered_without_gaps_for_refused_calls() -> None:
    factory = EventFactory("client-1", 512 * 1024)
    first = factory.build("Purchase", user_id="u", session_id=None)
    with pytest.raises(InvalidEvent):
        factory.build("Purchase", user_id="u", session_id=None, properties={"x": "y" * 600_000})
    with pytest.raises(InvalidEvent) as nan:
        factory.build("Purchase", user_id="u", session_id=None, properties={"x": float("nan")})
    assert nan.value.code == "properties_invalid"
    second = factory.build("Purchase", user_id="u", session_id=None, currency="eur", value=5)
    assert (first.seq, second.seq) == (1, 2)
    body = json.loads(second.data)
    assert body["context"]["client_id"] == "client-1" and body["context"]["client_seq"] == 2
    assert (body["value"], body["currency"]) == (5, "EUR")
    assert body["timestamp"].endswith("Z")


def _event(seq: int, size: int) -> QueuedEvent:
    data = json.dumps({"event_id": str(seq), "pad": "x" * max(0, size - 30)}).encode()
    return QueuedEvent(str(seq), seq, data)


@given(
    st.lists(st.integers(min_value=40, max_value=4000), min_size=0, max_size=60),
    st.integers(min_value=1, max_value=10),
    st.integers(min_value=4100, max_value=20000),
)
def test_split_keeps_order_and_every_request_within_its_limits(
    sizes: list[int], max_events: int, max_bytes: int
) -> None:
    events = [_event(i, size) for i, size in enumerate(sizes)]
    chunks = split(events, max_events, max_bytes)
    assert [e for chunk in chunks for e in chunk] == events
    for chunk in chunks:
        assert 1 <= len(chunk) <= max_events
        body = batch_body(chunk)
        assert len(body) <= max_bytes
        assert [e["event_id"] for e in json.loads(body)["batch"]] == [e.event_id for e in chunk]


def answer(status: int, body: object = None, retry_after: float | None = None) -> Answer:
    return Answer(status, b"" if body is None else json.dumps(body).encode(), retry_after)


def test_what_each_answer_means() -> None:
    too_old = [{"field": "timestamp", "code": "timestamp_too_old"}]
    limited = [{"field": "user_id", "code": "rate_limited"}]
    rejected = {
        "accepted": 1,
        "rejected": [
            {"index": 1, "event_id": "b", "errors": too_old},
            {"index": 2, "event_id": "c", "errors": limited},
        ],
    }
    some = classify(answer(200, rejected), 3)
    assert isinstance(some, Delivered)
    assert (some.accepted, [i for i, _ in some.rejected], some.retry) == (1, [1], (2,))
    none = classify(answer(400, {**rejected, "accepted": 0}), 3)  # no event accepted: 400
    assert isinstance(none, Delivered) and none.rejected[0][0] == 1
    assert classify(answer(202, {"status": "accepted"}), 1) == Delivered(1, (), ())
    invalid = [{"field": "body", "code": "batch_invalid"}]
    whole = classify(answer(400, {"error": "validation_failed", "errors": invalid}), 2)
    assert isinstance(whole, Refused) and whole.errors[0]["code"] == "batch_invalid"
    assert classify(answer(413, {"error": "body_too_large"}), 4) == Split()
    assert classify(answer(413, {"error": "body_too_large", "limit_bytes": 9}), 4) == Split(9)
    assert isinstance(classify(answer(413, {"error": "body_too_large"}), 1), Refused)
    for status in (408, 429, 500, 502, 503, 504):
        assert classify(answer(status, {"error": "x"}, 2.0), 1) == Retry(2.0, f"http_{status}")
    for status in (401, 403, 404, 415):
        refused = classify(answer(status, {"error": "key_unknown"}), 1)
        assert isinstance(refused, Refused) and refused.reason == "key_unknown"


def test_retry_after_is_seconds_or_an_http_date() -> None:
    assert parse_retry_after("3", 0.0) == 3.0
    assert parse_retry_after("Thu, 01 Jan 1970 00:00:10 GMT", 4.0) == 6.0
    assert parse_retry_after("Thu, 01 Jan 1970 00:00:10 GMT", 20.0) == 0.0
    assert parse_retry_after("soon", 0.0) is None
    assert parse_retry_after(None, 0.0) is None


def test_backoff_is_full_jitter_under_an_exponential_cap_and_retry_after_wins() -> None:
    policy = RetryPolicy(base_delay_secs=0.5, max_delay_secs=30.0, max_retry_after_secs=120.0)
    rng = random.Random(7)
    for retry in range(12):
        cap = min(30.0, 0.5 * 2**retry)
        delays = [policy.delay_secs(retry, None, rng) for _ in range(200)]
        assert all(0.0 <= d <= cap for d in delays)
        assert max(delays) > cap * 0.8  # spread over the whole range, not bunched at one end
        assert min(delays) < cap * 0.2
    assert policy.delay_secs(3, 7.0, rng) == 7.0
    assert policy.delay_secs(3, 9999.0, rng) == 120.0
    with pytest.raises(ValueError, match="negative"):
        RetryPolicy(max_retries=-1)


def test_the_guide_documents_every_setting_call_and_counter() -> None:
    import dataclasses
    import inspect
    from pathlib import Path

    import convtrack_sdk
    from convtrack_sdk import AsyncClient, Client, ClientStats
    from convtrack_sdk._stats import CLOSED, INTERNAL_ERROR, QUEUE_FULL, REFUSED, RETRIES_EXHAUSTED

    text = (Path(__file__).resolve().parents[2] / "docs" / "python-sdk.md").read_text()
    client_args = list(inspect.signature(Client).parameters)
    assert client_args == list(inspect.signature(AsyncClient).parameters)
    for name in client_args[2:]:
        assert f"| `{name}` |" in text, f"setting {name} is not in docs/python-sdk.md"
    for field in dataclasses.fields(RetryPolicy):
        assert f"`{field.name}=" in text
    for method in ("track", "identify", "page", "conversion_token", "flush", "close"):
        assert f"`{method}(" in text
        for arg in list(inspect.signature(getattr(Client, method)).parameters)[1:]:
            assert arg in text, f"{method}({arg}) is not documented"
    for field in dataclasses.fields(ClientStats):
        assert f"`{field.name}`" in text
    for reason in (QUEUE_FULL, RETRIES_EXHAUSTED, REFUSED, CLOSED, INTERNAL_ERROR):
        assert f"`{reason}`" in text
    for name in convtrack_sdk.__all__:
        assert hasattr(convtrack_sdk, name)
