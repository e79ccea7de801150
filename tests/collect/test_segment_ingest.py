"""Segment-spec messages through the collector's routes, in process: paths, batch-wide
members, mixed batches, Basic auth with gzip, the default currency, rejects."""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from convtrack.clock import ManualClock
from convtrack.config import load_settings
from convtrack.errors import ConfigError
from convtrack.runtime.embedded import Pipeline
from tests.conftest import ADMIN_KEY, BROWSER_UA, WRITE_KEY, logged_payloads
from tests.support.inprocess import call, conversions, make_pipeline, process_all

START_US = 1_796_000_000_000_000


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(start_us=START_US)


@pytest.fixture
def pipeline(tmp_path: Path, clock: ManualClock) -> Iterator[Pipeline]:
    built = make_pipeline(tmp_path / "data", clock)
    yield built
    built.close()


def today(clock: ManualClock) -> str:
    return datetime.fromtimestamp(clock.now_us() / 1e6, tz=UTC).strftime("%Y-%m-%d")


def iso(epoch_us: int) -> str:
    return datetime.fromtimestamp(epoch_us / 1e6, tz=UTC).isoformat().replace("+00:00", "Z")


def post(
    pipeline: Pipeline, path: str, body: Any, *, gzipped: bool = False, basic: bool = True
) -> httpx.Response:
    """As the Segment libraries send: HTTP Basic with the write key as user name."""
    content = json.dumps(body).encode()
    headers = {"Content-Type": "application/json", "User-Agent": "analytics-python/2.4.0"}
    if basic:
        headers["Authorization"] = "Basic " + base64.b64encode(f"{WRITE_KEY}:".encode()).decode()
    else:
        headers["Authorization"] = f"Bearer {WRITE_KEY}"
    if gzipped:
        content = gzip.compress(content)
        headers["Content-Encoding"] = "gzip"

    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=pipeline.app, client=("198.51.100.7", 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.post(path, content=content, headers=headers)

    return asyncio.run(go())


def logged(pipeline: Pipeline) -> dict[str, dict[str, Any]]:
    """event_id -> the envelope in the log."""
    events = [json.loads(p) for p in logged_payloads(Path(pipeline.settings.data_dir))]
    return {e["event_id"]: e for e in events}


def track(message_id: str, **kw: Any) -> dict[str, Any]:
    return {
        "type": "track",
        "event": "Order Completed",
        "messageId": message_id,
        "userId": "u_1",
        "context": {"userAgent": BROWSER_UA},  # a person's browser: counted
        "properties": {"revenue": 49.99, "currency": "USD", "campaign_id": "spring"},
        **kw,
    }


def test_every_segment_path_takes_messages(pipeline: Pipeline, clock: ManualClock) -> None:
    for path in ("/v1/track", "/v1/t"):
        assert post(pipeline, path, track(f"t{path}")).status_code == 202
    singles = {
        "/v1/identify": "identify", "/v1/i": "identify", "/v1/page": "page_view",
        "/v1/p": "page_view", "/v1/screen": "page_view", "/v1/s": "page_view",
    }  # fmt: skip
    for path in singles:  # no type: the path's
        response = post(pipeline, path, {"messageId": f"m{path}", "userId": "u_1"})
        assert response.status_code == 202, (path, response.text)
    for path in ("/v1/batch", "/v1/b"):
        answer = post(pipeline, path, {"batch": [track(f"b{path}")]}, gzipped=True)
        assert answer.json() == {"accepted": 1, "rejected": []}
    events = logged(pipeline)
    for path, name in singles.items():
        assert events[f"m{path}"]["event_name"] == name
    process_all(pipeline)
    stats = conversions(pipeline, today(clock), "spring")
    assert (stats["conversions"], stats["value"]) == (4, {"USD": 4 * 4999})


def test_a_native_event_on_a_segment_path_is_native(pipeline: Pipeline) -> None:
    native = {"event_id": "n1", "event_name": "identify", "user_id": "u"}
    assert post(pipeline, "/v1/identify", native).status_code == 202
    assert logged(pipeline)["n1"]["event_name"] == "identify"


def test_batch_sent_at_and_context_apply_to_each_message(
    pipeline: Pipeline, clock: ManualClock
) -> None:
    now = clock.now_us()
    # The sender's clock is 2 minutes slow; each message was made 3 s before sending.
    sent = now - 120_000_000
    body = {
        "batch": [
            track("b1", timestamp=iso(sent - 3_000_000)),
            track("b2", timestamp=iso(sent - 3_000_000), sentAt=iso(sent - 3_000_000),
                  context={"userAgent": "own agent", "ip": "203.0.113.5"}),
        ],
        "sentAt": iso(sent),
        "context": {"ip": "198.51.100.1", "locale": "de-DE",
                    "traits": {"email": "jane@example.com"}},
    }  # fmt: skip
    assert post(pipeline, "/v1/batch", body).json() == {"accepted": 2, "rejected": []}
    events = logged(pipeline)
    first, second = events["b1"], events["b2"]
    assert first["event_time_us"] == now - 3_000_000  # received - sentAt + timestamp
    assert second["event_time_us"] == now  # its own sentAt wins
    assert first["context"]["ip"] == "198.51.100.1"
    assert first["context"]["locale"] == "de-DE"
    assert first["context"]["user_agent"] == BROWSER_UA
    assert second["context"]["ip"] == "203.0.113.5"
    assert second["context"]["user_agent"] == "own agent"
    assert second["context"]["locale"] == "de-DE"
    assert first["user"]["email"] == second["user"]["email"] != "jane@example.com"
    assert len(first["user"]["email"]) == 64


def test_mixed_batch_and_rejects_keep_the_message_id(pipeline: Pipeline) -> None:
    body = {
        "batch": [
            {"event_id": "native-1", "event_name": "Purchase", "user_id": "u", "value": 100,
             "currency": "EUR"},
            track("seg-ok"),
            track("seg-bad", properties={"revenue": 1.001, "currency": "usd"},
                  context={"traits": {"name": "Jane Doe", "address": {"street": "1 Main St"},
                                      "email": "jane@example.com"}}),
            {"type": "alias", "messageId": "seg-alias", "userId": "u", "previousId": "p"},
        ]
    }  # fmt: skip
    answer = post(pipeline, "/v1/batch", body).json()
    assert answer["accepted"] == 2
    assert [(r["index"], r["event_id"], [e["code"] for e in r["errors"]]) for r in
            answer["rejected"]] == [(2, "seg-bad", ["value_too_precise"]),
                                    (3, "seg-alias", ["type_unsupported"])]  # fmt: skip
    assert answer["rejected"][0]["errors"][0]["field"] == "properties.revenue"
    assert set(logged(pipeline)) == {"native-1", "seg-ok"}
    kept = call(pipeline, "GET", "/v1/rejects", key=ADMIN_KEY).json()["items"]
    by_id = {r["event_id"]: r for r in kept}
    assert by_id["seg-bad"]["codes"] == ["value_too_precise"]
    assert by_id["seg-alias"]["codes"] == ["type_unsupported"]
    # Traits are no contact fields a scrub knows by name: kept only as digests.
    for raw in ("Jane", "Main St", "jane@example.com"):
        assert raw not in by_id["seg-bad"]["body"]


def test_single_message_reject_answers_400_with_segment_fields(pipeline: Pipeline) -> None:
    response = post(pipeline, "/v1/track", track("s1", properties={"total": 5}))
    assert response.status_code == 400
    assert response.json()["errors"] == [
        {"field": "properties.currency", "code": "currency_missing",
         "message": "currency is required when value is present"}
    ]  # fmt: skip
    kept = call(pipeline, "GET", "/v1/rejects", key=ADMIN_KEY).json()["items"]
    assert [(r["event_id"], r["codes"]) for r in kept] == [("s1", ["currency_missing"])]


def test_a_retried_message_counts_once(pipeline: Pipeline, clock: ManualClock) -> None:
    for _ in range(2):
        assert post(pipeline, "/v1/batch", {"batch": [track("again")]}).status_code == 200
    assert post(pipeline, "/v1/track", track("again"), basic=False).status_code == 202
    process_all(pipeline)
    assert conversions(pipeline, today(clock), "spring")["conversions"] == 1


def test_default_currency_settings(tmp_path: Path, clock: ManualClock) -> None:
    built = make_pipeline(tmp_path / "data", clock, collect={"default_currency": "EUR"})
    try:
        message = track("dc1", properties={"value": 12.5, "campaign_id": "spring"})
        assert post(built, "/v1/track", message).status_code == 202
        process_all(built)
        assert conversions(built, today(clock), "spring")["value"] == {"EUR": 1250}
    finally:
        built.close()
    per_source = make_pipeline(
        tmp_path / "data2", clock,
        collect={"default_currency": "EUR", "default_currencies": {"default": "JPY"}},
    )  # fmt: skip
    try:
        message = track("dc2", properties={"total": 1200, "campaign_id": "spring"})
        assert post(per_source, "/v1/track", message).status_code == 202
        assert logged(per_source)["dc2"]["currency"] == "JPY"
        assert logged(per_source)["dc2"]["value"] == 1200
    finally:
        per_source.close()


def test_a_bad_default_currency_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="default_currency"):
        load_settings(environ={"CONVTRACK_COLLECT_DEFAULT_CURRENCY": "eur"})
    with pytest.raises(ConfigError, match=r"default_currencies\.shop"):
        load_settings(environ={}, overrides={"collect": {"default_currencies": {"shop": "XYZ"}}})


def test_default_currencies_from_the_environment() -> None:
    settings = load_settings(environ={"CONVTRACK_COLLECT_DEFAULT_CURRENCIES": "eu=EUR, jp=JPY"})
    assert settings.collect.default_currencies == {"eu": "EUR", "jp": "JPY"}
    assert settings.collect.currency_of("jp") == "JPY"
    assert settings.collect.currency_of("us") is None
    with pytest.raises(ConfigError, match="name=value"):
        load_settings(environ={"CONVTRACK_COLLECT_DEFAULT_CURRENCIES": "EUR"})


def test_preflight_on_a_segment_path(pipeline: Pipeline) -> None:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=pipeline.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.options(
                f"/v1/p?writeKey={WRITE_KEY}",
                headers={"Origin": "https://shop.example", "Access-Control-Request-Method": "POST"},
            )

    response = asyncio.run(go())
    assert response.status_code == 204
    assert response.headers["access-control-allow-origin"] == "https://shop.example"
