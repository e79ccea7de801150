"""A retried or replayed batch publishes exactly the enrichment it counted (both hot stores).

The hot store already holds the sessions and touches the first run of a
batch wrote; enriching the batch again from them must not change what the
processed log (and so the lake) says about events already counted.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from convtrack.cli.reconcile import reconcile
from convtrack.clock import ManualClock
from convtrack.model.event import Envelope
from convtrack.runtime.embedded import Pipeline
from tests.conftest import WRITE_KEY
from tests.support.inprocess import call, conversions, make_pipeline, process_all
from tests.support.processorkit import (
    HOT_KINDS,
    FailingPublish,
    append_events,
    count_then_crash,
    fresh_runner,
    hot_settings,
    published_events,
    run_until_idle,
)

MINUTE = 60.0
LANDING = "https://shop.example/?utm_source=news&utm_medium=email&utm_campaign={}"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(start_us=1_796_000_000_000_000)


@pytest.fixture(params=HOT_KINDS)
def pipeline(
    request: pytest.FixtureRequest, tmp_path: Path, clock: ManualClock
) -> Iterator[Pipeline]:
    settings = hot_settings(request.param, request, tmp_path)
    built = make_pipeline(tmp_path / "data", clock, **settings)
    yield built
    built.close()


def send(pipeline: Pipeline, body: dict[str, Any]) -> None:
    response = call(pipeline, "POST", "/v1/track", body, key=WRITE_KEY)
    assert response.status_code == 202, response.text


def page_view(event_id: str, campaign: str) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "event_name": "page_view",
        "session_id": "s1",
        "user_id": "u1",
        "context": {"page_url": LANDING.format(campaign)},
    }


def purchase(event_id: str) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "event_name": "Purchase",
        "session_id": "s1",
        "user_id": "u1",
        "value": 5000,
        "currency": "EUR",
        "context": {"page_url": "https://shop.example/thanks"},
    }


def today(clock: ManualClock) -> str:
    return datetime.fromtimestamp(clock.now_us() / 1e6, tz=UTC).strftime("%Y-%m-%d")


def touch_a_then_purchase_and_touch_b(pipeline: Pipeline, clock: ManualClock) -> None:
    send(pipeline, page_view("touch-a", "A"))
    process_all(pipeline)
    clock.advance(5 * MINUTE)
    send(pipeline, purchase("buy"))  # no campaign of its own: the last touch's, A
    clock.advance(1)
    send(pipeline, page_view("touch-b", "B"))  # same batch, after the purchase


def assert_counted_as_published(
    pipeline: Pipeline, clock: ManualClock, later: str | None = None
) -> None:
    events = {e.event.event_id: e for e in published_events(pipeline)}
    assert sorted(events) == sorted(["buy", "touch-a", "touch-b", *([later] if later else [])])
    buy = events["buy"]
    assert (buy.campaign_id, buy.campaign_source, buy.session_valid) == ("A", "news", True)
    assert events["touch-a"].session_valid is False
    assert events["touch-b"].session_valid is True
    assert conversions(pipeline, today(clock), "A")["conversions"] == 1
    if later is not None:  # a new entry after the replay sees the state the first run left
        assert (events[later].campaign_id, events[later].session_valid) == ("B", True)
    expected_b = 0 if later is None else 1
    assert conversions(pipeline, today(clock), "B")["conversions"] == expected_b
    pipeline.cold.flush_all()  # the lake says what the counters counted
    result = reconcile(pipeline.settings, today(clock))
    assert result.status == "agree", result.text
    rows = [
        (row.campaign_id, row.hot_conversions, row.lake_conversions)
        for row in result.campaigns
        if row.campaign_id in ("A", "B")
    ]
    assert rows == [("A", 1, 1)] + ([] if later is None else [("B", 1, 1)])


def test_a_retried_publish_publishes_the_enrichment_it_counted(
    pipeline: Pipeline, clock: ManualClock
) -> None:
    touch_a_then_purchase_and_touch_b(pipeline, clock)
    with FailingPublish(pipeline.processed, times=1) as failing:
        process_all(pipeline)  # counted, publish refused, the same batch retried
    assert failing.left == 0
    assert_counted_as_published(pipeline, clock)


def test_a_crash_between_counting_and_publishing_replays_the_same_enrichment(
    pipeline: Pipeline, clock: ManualClock
) -> None:
    touch_a_then_purchase_and_touch_b(pipeline, clock)
    assert count_then_crash(pipeline, clock) == 2
    assert conversions(pipeline, today(clock), "A")["conversions"] == 1
    # a later entry arrives before the restart: the replay is mixed with a new one
    clock.advance(MINUTE)
    send(pipeline, purchase("buy-later"))
    run_until_idle(fresh_runner(pipeline, clock))
    assert_counted_as_published(pipeline, clock, later="buy-later")


def test_a_touch_later_than_the_event_never_attributes_it(
    pipeline: Pipeline, clock: ManualClock
) -> None:
    now = clock.now_us()

    def event(event_id: str, name: str, at: int, page_url: str) -> Envelope:
        return Envelope(
            event_id=event_id, source="default", event_name=name, event_time_us=at,
            received_at_us=at, user_id="u1", session_id="s1", context={"page_url": page_url},
        )  # fmt: skip

    # logged in this order by two collectors, the second one's clock 5 minutes behind
    append_events(pipeline, [event("touch-b", "page_view", now, LANDING.format("B"))])
    process_all(pipeline)
    append_events(pipeline, [event("buy", "Purchase", now - 300_000_000, "https://shop/x")])
    process_all(pipeline)
    events = {e.event.event_id: e for e in published_events(pipeline)}
    assert events["buy"].campaign_id == "(none)"
    assert (events["buy"].campaign_source, events["buy"].campaign_medium) == (
        "(direct)",
        "(none)",
    )
    assert conversions(pipeline, today(clock), "B")["conversions"] == 0
