"""Sessions, attribution and enrichment through the processor, with a moved clock."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from convtrack.clock import ManualClock
from convtrack.model.processed import ProcessedEvent, decode_processed
from convtrack.runtime.embedded import Pipeline
from tests.conftest import BROWSER_UA, WRITE_KEY
from tests.support.inprocess import call, conversions, make_pipeline, process_all

MINUTE = 60.0
IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15"
    " (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1"
)
GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(start_us=1_796_000_000_000_000)


@pytest.fixture
def pipeline(tmp_path: Path, clock: ManualClock) -> Iterator[Pipeline]:
    built = make_pipeline(tmp_path / "data", clock)
    yield built
    built.close()


def send(pipeline: Pipeline, body: dict[str, Any]) -> None:
    response = call(pipeline, "POST", "/v1/track", body, key=WRITE_KEY)
    assert response.status_code == 202, response.text


def published(pipeline: Pipeline) -> dict[str, ProcessedEvent]:
    consumer = pipeline.processed.consumer("test-reader")
    out: dict[str, ProcessedEvent] = {}
    while entries := consumer.poll(1000, 0.05):
        for entry in entries:
            event = decode_processed(entry.payload)
            out[event.event.event_id] = event
    consumer.close()
    return out


def page_view(event_id: str, url: str, **kw: Any) -> dict[str, Any]:
    context = {"page_url": url, "user_agent": IPHONE, "ip": "8.8.8.8", **kw.pop("context", {})}
    return {
        "event_id": event_id,
        "event_name": "page_view",
        "session_id": "s1",
        "user_id": "u1",
        "context": context,
        **kw,
    }


def purchase(event_id: str, **kw: Any) -> dict[str, Any]:
    context = {"page_url": "https://shop.example/thanks", "user_agent": IPHONE, "ip": "8.8.8.8"}
    return {
        "event_id": event_id,
        "event_name": "Purchase",
        "session_id": "s1",
        "user_id": "u1",
        "value": 5000,
        "currency": "EUR",
        "context": context,
        **kw,
    }


def test_session_opens_refreshes_and_expires(pipeline: Pipeline, clock: ManualClock) -> None:
    send(pipeline, page_view("p1", "https://shop.example/"))
    clock.advance(20 * MINUTE)
    send(pipeline, page_view("p2", "https://shop.example/a"))
    clock.advance(29 * MINUTE)  # 29 min after the last event: still open (sliding)
    send(pipeline, page_view("p3", "https://shop.example/b"))
    clock.advance(31 * MINUTE)  # expired
    send(pipeline, page_view("p4", "https://shop.example/c"))
    process_all(pipeline)
    events = published(pipeline)
    assert [events[e].session_valid for e in ("p1", "p2", "p3", "p4")] == [
        False,
        True,
        True,
        False,
    ]


def test_campaign_comes_from_the_session_touch(pipeline: Pipeline, clock: ManualClock) -> None:
    landing = "https://shop.example/?utm_source=newsletter&utm_medium=email&utm_campaign=winter"
    send(pipeline, page_view("p1", landing))
    clock.advance(5 * MINUTE)
    send(pipeline, purchase("buy"))
    process_all(pipeline)
    buy = published(pipeline)["buy"]
    assert (buy.campaign_id, buy.campaign_source, buy.campaign_medium) == (
        "winter",
        "newsletter",
        "email",
    )
    assert buy.touch_source is None  # the purchase itself came direct
    date = datetime.fromtimestamp(clock.now_us() / 1e6, tz=UTC).strftime("%Y-%m-%d")
    assert conversions(pipeline, date, "winter")["conversions"] == 1


def test_click_id_attributes_for_days_and_own_campaign_wins(
    pipeline: Pipeline, clock: ManualClock
) -> None:
    send(pipeline, page_view("p1", "https://shop.example/?gclid=Cj0KCQ-abc"))
    clock.advance(3 * 86_400)  # a new session days later, within the 30-day lookback
    send(pipeline, purchase("buy1"))
    send(pipeline, purchase("buy2", campaign_id="explicit"))
    process_all(pipeline)
    events = published(pipeline)
    assert (events["buy1"].campaign_source, events["buy1"].campaign_medium) == ("google", "cpc")
    assert events["buy1"].session_valid is False
    assert events["buy2"].campaign_id == "explicit"


def test_referrer_classes_and_direct(pipeline: Pipeline) -> None:
    send(
        pipeline,
        page_view(
            "s",
            "https://shop.example/",
            user_id="a",
            session_id="a",
            context={"referrer": "https://www.google.com/search?q=shoes"},
        ),
    )
    send(pipeline, page_view("d", "https://shop.example/", user_id="b", session_id="b"))
    process_all(pipeline)
    events = published(pipeline)
    assert (events["s"].campaign_source, events["s"].campaign_medium) == ("google", "organic")
    assert (events["d"].campaign_source, events["d"].campaign_medium) == ("(direct)", "(none)")


def test_device_country_and_bots(pipeline: Pipeline, clock: ManualClock) -> None:
    send(pipeline, purchase("human"))
    bot = purchase("bot", user_id="crawler", session_id="crawler")
    bot["context"] = {**bot["context"], "user_agent": GOOGLEBOT, "ip": "10.1.2.3"}
    send(pipeline, bot)
    process_all(pipeline)
    events = published(pipeline)
    assert (events["human"].device_type, events["human"].country_code) == ("mobile", "US")
    assert events["human"].is_bot is False and events["human"].is_conversion is True
    assert (events["bot"].device_type, events["bot"].is_bot) == ("bot", True)
    assert events["bot"].country_code == "ZZ"
    assert events["bot"].is_conversion is False  # stored, but not counted
    date = datetime.fromtimestamp(clock.now_us() / 1e6, tz=UTC).strftime("%Y-%m-%d")
    assert conversions(pipeline, date)["conversions"] == 1
    by_device = dict(pipeline.hot.breakdown("device_type", date))
    assert {k: v.conversions for k, v in by_device.items()} == {"mobile": 1}
    by_country = dict(pipeline.hot.breakdown("country_code", date))
    assert {k: v.value for k, v in by_country.items()} == {"US": {"EUR": 5000}}


def test_stats_group_by_dimension(pipeline: Pipeline, clock: ManualClock) -> None:
    send(pipeline, purchase("a"))
    send(
        pipeline,
        purchase(
            "b",
            user_id="u2",
            session_id="s2",
            context={"user_agent": BROWSER_UA, "ip": "2.16.0.1"},
        ),
    )
    process_all(pipeline)
    date = datetime.fromtimestamp(clock.now_us() / 1e6, tz=UTC).strftime("%Y-%m-%d")
    response = call(pipeline, "GET", f"/v1/stats/conversions?date={date}&group_by=country_code")
    body = response.json()
    assert body["group_by"] == "country_code"
    assert sum(r["conversions"] for r in body["rows"]) == 2
    assert "US" in {r["key"] for r in body["rows"]}
    bad = call(pipeline, "GET", f"/v1/stats/conversions?date={date}&group_by=color")
    assert bad.status_code == 400


def test_live_view_breaks_today_down_by_dimension(pipeline: Pipeline) -> None:
    send(pipeline, purchase("a"))
    process_all(pipeline)
    live = call(pipeline, "GET", "/v1/stats/live").json()
    assert live["today_by"]["country_code"] == [
        {"key": "US", "conversions": 1, "value": {"EUR": 5000}}
    ]
    assert live["today_by"]["device_type"][0]["key"] == "mobile"
    assert live["today_by"]["campaign_source"][0]["key"] == "(direct)"
