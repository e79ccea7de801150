"""One definition of a counted conversion, whatever ``conversions.count_bots`` says.

The hot counters, the lake's reports (past days), reconcile and attribution
must all count the same events: with ``count_bots = true`` a bot's Purchase
is counted everywhere, with ``false`` nowhere.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from convtrack.cli.reconcile import reconcile
from convtrack.clock import ManualClock
from convtrack.runtime.embedded import Pipeline
from convtrack.store.cold.attribution import count_conversions
from convtrack.store.cold.query import connect
from tests.conftest import WRITE_KEY
from tests.support.inprocess import call, make_pipeline, process_all

NOW_US = 1_795_860_000_000_000  # 2026-11-28T10:00:00Z
TODAY, YESTERDAY = "2026-11-28", "2026-11-27"
HOUR_MS = 3_600_000
DESKTOP_UA = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko)"
    " Chrome/126.0 Safari/537.36"
)
BOT_UA = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"


@pytest.fixture(params=[True, False], ids=["count_bots", "skip_bots"])
def pipeline(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Pipeline]:
    built = make_pipeline(
        tmp_path / "data",
        ManualClock(start_us=NOW_US),
        limits={"user_events_per_sec": 100_000},
        conversions={"count_bots": request.param},
    )
    yield built
    built.close()


def send(pipeline: Pipeline, event_id: str, hours_ago: float, value: int, agent: str) -> None:
    body: dict[str, Any] = {
        "event_id": event_id,
        "event_name": "Purchase",
        "user_id": f"u-{event_id}",
        "timestamp": NOW_US // 1000 - int(hours_ago * HOUR_MS),
        "value": value,
        "currency": "USD",
        "campaign_id": "spring",
        "context": {"user_agent": agent, "page_url": "https://shop.example/?utm_source=g"},
    }
    response = call(pipeline, "POST", "/v1/track", body, key=WRITE_KEY)
    assert response.status_code == 202, response.text


def report(
    pipeline: Pipeline, first: str, last: str, group_by: str = "day"
) -> list[tuple[str, int, dict[str, int]]]:
    path = f"/v1/reports/conversions?from={first}&to={last}&group_by={group_by}"
    response = call(pipeline, "GET", path)
    assert response.status_code == 200, response.text
    return [(r["key"], r["conversions"], r["value"]) for r in response.json()["rows"]]


def test_every_reader_counts_what_the_hot_store_counted(pipeline: Pipeline) -> None:
    count_bots = pipeline.settings.conversions.count_bots
    for day_hours_ago in (0, 24):  # today and yesterday
        send(pipeline, f"human-{day_hours_ago}", day_hours_ago + 1, 1000, DESKTOP_UA)
        send(pipeline, f"bot-{day_hours_ago}", day_hours_ago + 1, 7, BOT_UA)
    process_all(pipeline)
    pipeline.cold.flush_all()

    expected = (2, {"USD": 1007}) if count_bots else (1, {"USD": 1000})
    for day in (TODAY, YESTERDAY):
        hot = pipeline.hot.conversions(None, day)
        assert (hot.conversions, hot.value) == expected, day
        result = reconcile(pipeline.settings, day)
        assert result.status == "agree", result.text
        assert result.exit_code == 0
    # Today from the hot counters, yesterday from the lake: the same definition.
    assert report(pipeline, YESTERDAY, TODAY) == [(YESTERDAY, *expected), (TODAY, *expected)]
    by_device = [("desktop", 1, {"USD": 1000})] + ([("bot", 1, {"USD": 7})] if count_bots else [])
    for day in (YESTERDAY, TODAY):
        assert sorted(report(pipeline, day, day, "device_type")) == sorted(by_device), day
    con = connect(pipeline.lake)
    try:
        counted = count_conversions(con, date(2026, 11, 27), date(2026, 11, 28))
    finally:
        con.close()
    assert counted == 2 * expected[0]
    attribution = call(
        pipeline, "GET", f"/v1/reports/attribution?model=linear&from={YESTERDAY}&to={TODAY}"
    )
    assert attribution.status_code == 200, attribution.text
    body = attribution.json()
    assert body["conversions"] == 2 * expected[0]
    assert sum(row["conversions"] for row in body["rows"]) == pytest.approx(2 * expected[0])
