"""GET /v1/reports/conversions in this process: the lake for past days, hot counters for today."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from convtrack.clock import ManualClock
from convtrack.log.base import LogRecord
from convtrack.model.event import Envelope
from convtrack.model.processed import ProcessedEvent, encode_processed
from convtrack.runtime.embedded import Pipeline
from tests.conftest import ADMIN_KEY, SERVER_KEY, WRITE_KEY
from tests.support.inprocess import call, make_pipeline, process_all

NOW_US = 1_795_860_000_000_000  # 2026-11-28T10:00:00Z
TODAY, YESTERDAY, TWO_AGO = "2026-11-28", "2026-11-27", "2026-11-26"
HOUR_MS = 3_600_000
DESKTOP_UA = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko)"
    " Chrome/126.0 Safari/537.36"
)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(start_us=NOW_US)


@pytest.fixture
def pipeline(tmp_path: Path, clock: ManualClock) -> Iterator[Pipeline]:
    built = make_pipeline(tmp_path / "data", clock, limits={"user_events_per_sec": 100_000})
    yield built
    built.close()


def send(
    pipeline: Pipeline, event_id: str, hours_ago: float, campaign: str, value: int, currency: str
) -> None:
    body: dict[str, Any] = {
        "event_id": event_id,
        "event_name": "Purchase",
        "user_id": f"u-{event_id}",
        "timestamp": NOW_US // 1000 - int(hours_ago * HOUR_MS),
        "value": value,
        "currency": currency,
        "campaign_id": campaign,
        "context": {"user_agent": DESKTOP_UA},
    }
    response = call(pipeline, "POST", "/v1/track", body, key=WRITE_KEY)
    assert response.status_code == 202, response.text


def report(
    pipeline: Pipeline, first: str, last: str, group_by: str, key: str = SERVER_KEY
) -> dict[str, Any]:
    path = f"/v1/reports/conversions?from={first}&to={last}&group_by={group_by}"
    response = call(pipeline, "GET", path, key=key)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert (body["from"], body["to"], body["group_by"]) == (first, last, group_by)
    return body


def rows(body: dict[str, Any]) -> list[tuple[str, int, dict[str, int]]]:
    return [(r["key"], r["conversions"], r["value"]) for r in body["rows"]]


def seed_past_days(pipeline: Pipeline) -> None:
    """Two days ago and yesterday, flushed to the lake; with a duplicate and a page view."""
    send(pipeline, "a1", 34, "spring", 1000, "USD")  # 2026-11-27T00:00Z
    send(pipeline, "a2", 40, "fall", 500, "EUR")  # 2026-11-26T18:00Z
    send(pipeline, "a1", 34, "spring", 1000, "USD")  # a duplicate: counted once
    send(pipeline, "a3", 20, "spring", 250, "USD")  # 2026-11-27T14:00Z
    page_view = {"event_name": "page_view", "session_id": "s1", "campaign_id": "spring"}
    assert call(pipeline, "POST", "/v1/track", page_view, key=WRITE_KEY).status_code == 202
    process_all(pipeline)
    pipeline.cold.flush_all()


def test_day_and_campaign_merge_the_lake_with_todays_hot_counters(
    pipeline: Pipeline, clock: ManualClock
) -> None:
    seed_past_days(pipeline)
    send(pipeline, "t1", 2, "spring", 100, "USD")  # today, flushed too
    process_all(pipeline)
    pipeline.cold.flush_all()
    send(pipeline, "t2", 1, "fall", 70, "EUR")  # today, counted but not in the lake yet
    send(pipeline, "t3", 1, "spring", 30, "JPY")
    send(pipeline, "t1", 0.5, "spring", 100, "USD")  # a duplicate of a flushed event
    process_all(pipeline)

    by_day = report(pipeline, TWO_AGO, TODAY, "day")
    assert by_day["today_from"] == "hot"
    assert rows(by_day) == [
        (TWO_AGO, 1, {"EUR": 500}),
        (YESTERDAY, 2, {"USD": 1250}),
        (TODAY, 3, {"USD": 100, "EUR": 70, "JPY": 30}),  # unflushed ones included, no double
    ]
    by_campaign = report(pipeline, TWO_AGO, TODAY, "campaign_id")
    assert by_campaign["today_from"] == "hot"
    assert rows(by_campaign) == [
        ("fall", 2, {"EUR": 570}),
        ("spring", 4, {"USD": 1350, "JPY": 30}),
    ]
    # Past days only: the lake alone; today only: the hot counters alone.
    assert rows(report(pipeline, TWO_AGO, YESTERDAY, "campaign_id")) == [
        ("fall", 1, {"EUR": 500}),
        ("spring", 2, {"USD": 1250}),
    ]
    assert rows(report(pipeline, TODAY, "2026-12-31", "day")) == [
        (TODAY, 3, {"USD": 100, "EUR": 70, "JPY": 30})
    ]
    assert rows(report(pipeline, "2025-11-28", "2025-12-01", "day")) == []

    # A day later (by the clock) yesterday's numbers come from the lake: what the
    # lake lacks shows until it is flushed.
    clock.advance(24 * 3600)
    assert rows(report(pipeline, TODAY, TODAY, "day")) == [(TODAY, 1, {"USD": 100})]
    pipeline.cold.flush_all()
    assert rows(report(pipeline, TODAY, TODAY, "day")) == [
        (TODAY, 3, {"USD": 100, "EUR": 70, "JPY": 30})
    ]


def test_country_and_device_come_from_the_hot_counters_for_today(
    pipeline: Pipeline, clock: ManualClock
) -> None:
    seed_past_days(pipeline)
    send(pipeline, "t1", 1, "spring", 100, "USD")
    process_all(pipeline)  # counted, not flushed
    for group_by in ("country_code", "device_type"):
        body = report(pipeline, TWO_AGO, TODAY, group_by)
        assert body["today_from"] == "hot"
        assert sum(r["conversions"] for r in body["rows"]) == 4  # today's from the counters
    pipeline.cold.flush_all()
    for group_by in ("country_code", "device_type"):
        body = report(pipeline, TWO_AGO, TODAY, group_by)
        assert sum(r["conversions"] for r in body["rows"]) == 4
        usd = sum(r["value"].get("USD", 0) for r in body["rows"])
        assert usd == 1350


def publish_processed(pipeline: Pipeline, events: list[dict[str, Any]]) -> None:
    """Put enriched events straight on the processed log, as the processor would."""
    records = []
    for offset, spec in enumerate(events, start=10_000):
        envelope = Envelope(
            event_id=f"p{offset}",
            source="default",
            event_name="Purchase",
            event_time_us=NOW_US,
            received_at_us=NOW_US,
            user_id="u",
            value=spec.get("value"),
            currency=spec.get("currency"),
            campaign_id="spring",
        )
        processed = ProcessedEvent(
            event=envelope,
            source_partition=0,
            source_offset=offset,
            campaign_id="spring",
            event_date=spec.get("date", TODAY),
            is_conversion=spec.get("is_conversion", True),
            country_code=spec["country"],
            device_type=spec["device"],
            is_bot=spec.get("is_bot", False),
            logged_at_us=NOW_US,
            processed_at_us=NOW_US,
            counted_at_us=NOW_US,
        )
        records.append(LogRecord("k", encode_processed(processed)))
    pipeline.processed.append_blocking(records)


def test_country_and_device_rows_skip_bots_and_session_events(pipeline: Pipeline) -> None:
    publish_processed(
        pipeline,
        [
            {"country": "DE", "device": "mobile", "value": 100, "currency": "EUR",
             "date": YESTERDAY},
            {"country": "DE", "device": "desktop", "value": 50, "currency": "EUR",
             "date": TWO_AGO},
            {"country": "US", "device": "mobile", "value": 300, "currency": "USD",
             "date": YESTERDAY},
            {"country": "US", "device": "desktop", "date": YESTERDAY},  # no value
            {"country": "FR", "device": "bot", "value": 9, "currency": "EUR", "is_bot": True,
             "is_conversion": False, "date": YESTERDAY},  # count_bots off: not counted
            {"country": "FR", "device": "tablet", "is_conversion": False, "date": YESTERDAY},
            {"country": "GB", "device": "tablet", "date": "2026-11-25"},  # before the range
        ],
    )  # fmt: skip
    pipeline.cold.flush_all()  # past days come from the lake
    by_country = report(pipeline, TWO_AGO, YESTERDAY, "country_code")
    assert rows(by_country) == [("DE", 2, {"EUR": 150}), ("US", 2, {"USD": 300})]
    by_device = report(pipeline, TWO_AGO, YESTERDAY, "device_type")
    assert rows(by_device) == [
        ("desktop", 2, {"EUR": 50}),
        ("mobile", 2, {"EUR": 100, "USD": 300}),
    ]
    assert rows(report(pipeline, YESTERDAY, YESTERDAY, "country_code")) == [
        ("DE", 1, {"EUR": 100}),
        ("US", 2, {"USD": 300}),
    ]


@pytest.mark.parametrize(
    "query",
    [
        "to=2026-11-28&group_by=day",
        "from=2026-11-28&group_by=day",
        "from=2026-11-28&to=2026-11-28",
        "from=2026-11-28&to=2026-11-28&group_by=week",
        "from=2026-11-28&to=2026-11-28&group_by=",
        "from=2026-11-28&to=2026-11-31&group_by=day",
        "from=2026-13-01&to=2026-12-01&group_by=day",
        "from=20261128&to=20261129&group_by=day",
        "from=2026-W48-1&to=2026-11-29&group_by=day",
        "from=2026-11-29&to=2026-11-28&group_by=day",
        "from=2025-11-27&to=2026-11-28&group_by=day",  # 367 days
    ],
)
def test_bad_parameters_are_400(pipeline: Pipeline, query: str) -> None:
    response = call(pipeline, "GET", "/v1/reports/conversions?" + query)
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["error"] == "query_invalid" and body["message"]


def test_366_days_is_the_longest_range(pipeline: Pipeline) -> None:
    body = report(pipeline, "2025-11-28", "2026-11-28", "day")
    assert body["rows"] == []


def test_keys(pipeline: Pipeline) -> None:
    path = "/v1/reports/conversions?from=2026-11-28&to=2026-11-28&group_by=day"
    assert call(pipeline, "GET", path, key=WRITE_KEY).status_code == 403
    assert call(pipeline, "GET", path, key="not-a-known-key-0123456789").status_code == 401
    assert call(pipeline, "GET", path, key=ADMIN_KEY).status_code == 200
