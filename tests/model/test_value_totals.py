"""A poison pair of values can never stop counting (both hot stores, through the processor).

Two events of 9223372036854775807 used to fail every batch forever with
"value total ... overflows 64 bits". The collector bounds a value on its own;
these events are logged directly, so the sums are tested whatever the bound.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from convtrack.clock import ManualClock
from convtrack.model.event import Envelope
from convtrack.runtime.embedded import Pipeline
from convtrack.store.hot.base import TOTAL_MAX
from tests.conftest import ADMIN_KEY
from tests.support.inprocess import call, conversions, make_pipeline, process_all
from tests.support.processorkit import HOT_KINDS, append_events, hot_settings, published_events


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


def purchase(event_id: str, campaign: str, value: int, at: int) -> Envelope:
    return Envelope(
        event_id=event_id, source="default", event_name="Purchase", event_time_us=at,
        received_at_us=at, user_id=f"user-{event_id}", value=value, currency="USD",
        campaign_id=campaign,
    )  # fmt: skip


def overflows_metric(pipeline: Pipeline) -> float:
    text = call(pipeline, "GET", "/metrics", key=ADMIN_KEY).text
    found = re.search(r"^convtrack_value_overflows_total (\S+)$", text, re.MULTILINE)
    assert found is not None, "convtrack_value_overflows_total is not exported"
    return float(found.group(1))


def test_two_values_at_the_bound_are_counted_and_counting_goes_on(
    pipeline: Pipeline, clock: ManualClock
) -> None:
    now = clock.now_us()
    day = datetime.fromtimestamp(now / 1e6, tz=UTC).strftime("%Y-%m-%d")
    append_events(
        pipeline, [purchase("p1", "x", TOTAL_MAX, now), purchase("p2", "x", TOTAL_MAX, now)]
    )
    process_all(pipeline)
    clock.advance(60)
    later = now + 60_000_000
    append_events(pipeline, [purchase("p3", "x", 5, later), purchase("p4", "y", 7, later)])
    process_all(pipeline)

    x = conversions(pipeline, day, "x")
    assert (x["conversions"], x["value"]) == (3, {"USD": TOTAL_MAX})
    y = conversions(pipeline, day, "y")
    assert (y["conversions"], y["value"]) == (1, {"USD": 7})
    everything = conversions(pipeline, day)
    assert (everything["conversions"], everything["value"]) == (4, {"USD": TOTAL_MAX})
    assert sorted(e.event.event_id for e in published_events(pipeline)) == ["p1", "p2", "p3", "p4"]
    live = call(pipeline, "GET", "/v1/stats/live").json()
    assert live["value_overflows_total"] == 2  # x's total capped by each batch
    assert live["value"] == {"USD": TOTAL_MAX}
    assert overflows_metric(pipeline) == 2
    assert pipeline.processor.health()["healthy"] is True
