"""GET /v1/stats/conversions says how many events of the campaign and day were not
counted, and why; and whose user agent decides a bot. Through the ASGI app and the
real processor, on both hot stores."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from convtrack.clock import ManualClock
from convtrack.runtime.embedded import Pipeline
from tests.conftest import SERVER_KEY, WRITE_KEY, auth
from tests.support.inprocess import call, make_pipeline, process_all

GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
HEADLESS = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "HeadlessChrome/125.0.0.0 Safari/537.36"
)
IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1"
)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture(
    params=[("sqlite", False), ("sqlite", True), ("redis", False)],
    ids=["sqlite-skip_bots", "sqlite-count_bots", "redis-skip_bots"],
)
def pipeline(
    request: pytest.FixtureRequest, tmp_path: Path, clock: ManualClock
) -> Iterator[Pipeline]:
    hot_kind, count_bots = request.param
    settings: dict[str, Any] = {
        "limits": {"user_events_per_sec": 0},
        "conversions": {"count_bots": count_bots},
    }
    if hot_kind == "redis":
        url = request.getfixturevalue("redis_url")
        settings["hot"] = {"kind": "redis", "redis_url": url, "redis_prefix": uuid.uuid4().hex}
    built = make_pipeline(tmp_path, clock, **settings)
    yield built
    built.close()


def today(clock: ManualClock) -> str:
    return datetime.fromtimestamp(clock.now_us() / 1e6, tz=UTC).strftime("%Y-%m-%d")


def track(pipeline: Pipeline, body: dict[str, Any], user_agent: str, key: str = WRITE_KEY) -> None:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=pipeline.app, client=("198.51.100.7", 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            headers = {**auth(key), "User-Agent": user_agent}
            return await client.post("/v1/track", json=body, headers=headers)

    response = asyncio.run(go())
    assert response.status_code == 202, response.text


def purchase(event_id: str, **members: Any) -> dict[str, Any]:
    return {"event_id": event_id, "event_name": "Purchase", "user_id": "u1",
            "value": 4999, "currency": "USD", "campaign_id": "spring", **members}  # fmt: skip


def stats(pipeline: Pipeline, date: str, campaign: str | None = "spring") -> dict[str, Any]:
    query = f"/v1/stats/conversions?date={date}" + (f"&campaign_id={campaign}" if campaign else "")
    response = call(pipeline, "GET", query)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def test_stats_say_what_was_excluded_and_why(pipeline: Pipeline, clock: ManualClock) -> None:
    count_bots = pipeline.settings.conversions.count_bots
    date = today(clock)
    empty = stats(pipeline, date)
    assert empty == {"campaign_id": "spring", "date": date, "conversions": 0, "value": {},
                     "excluded": {"bot": 0, "duplicate": 0, "not_a_conversion": 0}}  # fmt: skip
    track(pipeline, purchase("curl-1"), "curl/8.5.0")  # the README's quickstart: counted
    track(pipeline, purchase("curl-1"), "curl/8.5.0")  # its retry: a duplicate
    track(pipeline, purchase("crawl-1"), GOOGLEBOT)
    track(pipeline, purchase("headless-1"), HEADLESS)
    track(pipeline, {"event_name": "page_view", "session_id": "s1", "campaign_id": "spring"},
          IPHONE)  # fmt: skip
    # A backend's request (server key, python-requests) on behalf of a crawler: the end
    # user's context.user_agent decides, not the request's.
    track(pipeline, purchase("backend-1", context={"user_agent": GOOGLEBOT}),
          "python-requests/2.32.3", key=SERVER_KEY)  # fmt: skip
    track(pipeline, purchase("backend-2"), "python-requests/2.32.3", key=SERVER_KEY)
    track(pipeline, purchase("other-1", campaign_id="autumn"), GOOGLEBOT)
    process_all(pipeline)
    bots = 3
    answer = stats(pipeline, date)
    if count_bots:
        assert answer["conversions"] == 2 + bots
        assert answer["excluded"] == {"bot": 0, "duplicate": 1, "not_a_conversion": 1}
    else:
        assert answer["conversions"] == 2 and answer["value"] == {"USD": 2 * 4999}
        assert answer["excluded"] == {"bot": bots, "duplicate": 1, "not_a_conversion": 1}
    everything = stats(pipeline, date, campaign=None)
    assert everything["excluded"]["bot"] == (0 if count_bots else bots + 1)
    assert stats(pipeline, "2020-01-01")["excluded"] == empty["excluded"]


def test_devices_of_http_clients_are_other(pipeline: Pipeline, clock: ManualClock) -> None:
    track(pipeline, purchase("curl-1"), "curl/8.5.0")
    track(pipeline, purchase("wget-1"), "Wget/1.21.4")
    track(pipeline, purchase("phone-1"), IPHONE)
    process_all(pipeline)
    response = call(
        pipeline, "GET", f"/v1/stats/conversions?date={today(clock)}&group_by=device_type"
    )
    rows = {r["key"]: r["conversions"] for r in response.json()["rows"]}
    assert rows == {"other": 2, "mobile": 1}
