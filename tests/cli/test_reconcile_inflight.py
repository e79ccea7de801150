"""``convtrack reconcile`` while events are in flight: behind (exit 3) until it can judge.

Driven in this process on the embedded default (the SQLite logs are read
through, so the counts per date are exact), with the injected clock.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from convtrack.cli import inflight
from convtrack.cli.main import cli
from convtrack.cli.reconcile import reconcile
from convtrack.clock import ManualClock
from convtrack.errors import LogUnavailable
from convtrack.log.base import next_positions
from convtrack.process.base import Batch, Item
from convtrack.runtime.embedded import Pipeline, build_chain
from convtrack.store.hot.base import Effect
from tests.conftest import WRITE_KEY
from tests.support.inprocess import call, make_pipeline, process_all

NOW_US = 1_795_860_000_000_000  # 2026-11-28T10:00:00Z
TODAY, YESTERDAY, QUIET = "2026-11-28", "2026-11-27", "2026-11-20"
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


def purchase(event_id: str, hours_ago: float, campaign: str, value: int) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "event_name": "Purchase",
        "user_id": f"u-{event_id}",
        "timestamp": NOW_US // 1000 - int(hours_ago * HOUR_MS),
        "value": value,
        "currency": "USD",
        "campaign_id": campaign,
        "context": {"user_agent": DESKTOP_UA},
    }


def send(pipeline: Pipeline, body: dict[str, Any]) -> None:
    response = call(pipeline, "POST", "/v1/track", body, key=WRITE_KEY)
    assert response.status_code == 202, response.text


def cli_reconcile(pipeline: Pipeline, day: str) -> tuple[int, dict[str, Any]]:
    data_dir = str(pipeline.settings.data_dir)
    done = CliRunner().invoke(
        cli, ["reconcile", "--date", day, "--data-dir", data_dir, "--format", "json"]
    )
    return done.exit_code, json.loads(done.output)


def test_a_backlog_is_behind_until_processed_and_flushed(pipeline: Pipeline) -> None:
    for i in range(5):
        send(pipeline, purchase(f"t{i}", 1, "spring", 100))
    send(pipeline, purchase("t0", 1, "spring", 100))  # a duplicate: accepted, in flight too
    send(pipeline, purchase("y1", 25, "fall", 70))  # yesterday
    send(pipeline, {"event_name": "page_view", "session_id": "s1"})  # today, not a conversion

    # Logged, not processed: both sides say 0, which proves nothing.
    behind = reconcile(pipeline.settings, TODAY)
    assert (behind.status, behind.exit_code) == ("behind", 3), behind.text
    assert behind.in_flight.not_counted == 8
    assert behind.in_flight.not_counted_dated == 7
    assert behind.in_flight.not_in_lake == 0
    assert "accepted, not yet counted by the processor: 8 event(s) (7 of them dated" in (
        behind.text
    )
    assert "no difference" not in behind.text
    assert reconcile(pipeline.settings, YESTERDAY).in_flight.not_counted_dated == 1
    # A day nothing in flight belongs to can be judged now: it has nothing (not "agree").
    quiet = reconcile(pipeline.settings, QUIET)
    assert (quiet.status, quiet.exit_code) == ("empty", 4), quiet.text
    assert quiet.summary == (
        "no events on 2026-11-20 in the counters or the lake: no conversions to compare"
        " (8 event(s) in flight, none that can change 2026-11-20)"
    )
    code, body = cli_reconcile(pipeline, TODAY)
    assert (code, body["status"], body["exit_code"]) == (3, "behind", 3)
    assert body["in_flight"]["not_counted"] == 8

    # Counted, not yet in the lake: still behind, and what the lake will add is known.
    process_all(pipeline)
    counted = reconcile(pipeline.settings, TODAY)
    assert (counted.status, counted.exit_code) == ("behind", 3), counted.text
    flight = counted.in_flight
    assert (flight.not_counted, flight.not_published) == (0, 0)
    assert (flight.not_in_lake, flight.not_in_lake_dated) == (7, 6)  # the duplicate is gone
    [spring] = counted.campaigns
    assert (spring.hot_conversions, spring.lake_conversions) == (5, 0)
    assert (spring.to_lake_conversions, spring.to_lake_value) == (5, {"USD": 500})
    assert spring.status == "ok" and counted.differences == []

    pipeline.cold.flush_all()
    for day, campaign, n in ((TODAY, "spring", 5), (YESTERDAY, "fall", 1)):
        agreed = reconcile(pipeline.settings, day)
        assert (agreed.status, agreed.exit_code) == ("agree", 0), agreed.text
        assert agreed.in_flight.total == 0
        assert agreed.text.splitlines()[-1] == "no difference"
        [row] = agreed.campaigns
        assert (row.campaign_id, row.hot_conversions, row.lake_conversions) == (campaign, n, n)
    code, body = cli_reconcile(pipeline, TODAY)
    assert (code, body["status"], body["differences"]) == (0, "agree", [])
    assert body["campaigns"][0]["hot_value"] == {"USD": 500}


def count_behind_the_lakes_back(pipeline: Pipeline, clock: ManualClock) -> None:
    """A conversion counted in the hot store that no event in the log explains."""
    effect = Effect(
        source="default", event_id="ghost", partition=0, offset=0, received_at_us=NOW_US,
        event_date=TODAY, campaign_id="spring", is_conversion=True, value=9, currency="USD",
    )  # fmt: skip
    pipeline.hot.apply("another-group", [effect], {0: 1}, clock.now_us())


def test_a_difference_nothing_in_flight_explains_is_one_even_during_a_backlog(
    pipeline: Pipeline, clock: ManualClock
) -> None:
    send(pipeline, purchase("t1", 1, "spring", 100))
    process_all(pipeline)
    pipeline.cold.flush_all()
    count_behind_the_lakes_back(pipeline, clock)

    differs = reconcile(pipeline.settings, TODAY)
    assert (differs.status, differs.exit_code) == ("differ", 1), differs.text
    assert differs.differences == [
        "campaign 'spring': conversions hot 2, lake 1; value hot USD 1.09, lake USD 1.00"
    ]
    # Events not yet counted add to both sides alike: they cannot explain it.
    send(pipeline, purchase("t2", 1, "spring", 100))
    still = reconcile(pipeline.settings, TODAY)
    assert (still.status, still.exit_code) == ("differ", 1), still.text
    assert still.in_flight.not_counted == 1
    # Nor can what the lake has not read yet, once it is read.
    process_all(pipeline)
    unflushed = reconcile(pipeline.settings, TODAY)
    assert (unflushed.status, unflushed.in_flight.not_in_lake) == ("differ", 1), unflushed.text
    assert unflushed.differences == [
        "campaign 'spring': conversions hot 3, lake + to_lake 2; value hot USD 2.09,"
        " lake + to_lake USD 2.00"
    ]
    code, body = cli_reconcile(pipeline, TODAY)
    assert (code, body["status"]) == (1, "differ")


def test_counted_but_not_published_is_behind_until_the_processor_resumes(
    tmp_path: Path, clock: ManualClock
) -> None:
    first = make_pipeline(tmp_path / "data", clock)
    for event_id in ("a", "b", "a", "c"):
        send(first, purchase(event_id, 1, "spring", 10))
    consumer = first.log.consumer("processor")
    chain = build_chain(first.settings, first.hot, consumer, first.processed, clock, first.metrics)
    first.processed.close()  # publishing fails, as if the process died right after counting
    entries = consumer.poll(100, 1.0)
    with pytest.raises(LogUnavailable):
        chain.submit(
            Batch(items=[Item(entry=e) for e in entries], positions=next_positions(entries))
        )
    consumer.close()
    for part in (first.log, first.hot, first.rejects):
        part.close()

    behind = reconcile(first.settings, TODAY)
    assert (behind.status, behind.exit_code) == ("behind", 3), behind.text
    assert behind.in_flight.not_counted == 0 and behind.in_flight.not_published == 4
    assert "counted, not yet published by the processor: at most 4" in behind.text
    assert behind.differences  # hot 3, lake 0: not judged, the processor publishes them

    second = make_pipeline(tmp_path / "data", clock)
    try:
        process_all(second)
        second.cold.flush_all()
        agreed = reconcile(second.settings, TODAY)
        assert (agreed.status, agreed.exit_code) == ("agree", 0), agreed.text
    finally:
        second.close()


def test_duplicates_at_the_end_of_the_log_do_not_hold_reconcile_back(
    pipeline: Pipeline,
) -> None:
    send(pipeline, purchase("a", 1, "spring", 10))
    process_all(pipeline)
    send(pipeline, purchase("a", 1, "spring", 10))  # counted as a duplicate: nothing published
    process_all(pipeline)
    pipeline.cold.flush_all()
    result = reconcile(pipeline.settings, TODAY)
    assert result.in_flight.not_published == 1  # the duplicate, which had nothing to publish
    assert (result.status, result.exit_code) == ("agree", 0), result.text


def test_stretches_longer_than_it_reads_are_counted_and_say_so(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(inflight, "MAX_READ", 2)
    for i in range(3):
        send(pipeline, purchase(f"t{i}", 1, "spring", 100))
    behind = reconcile(pipeline.settings, QUIET)  # not even a quiet day can be judged now
    assert (behind.status, behind.exit_code) == ("behind", 3), behind.text
    assert (behind.in_flight.not_counted, behind.in_flight.not_counted_dated) == (3, None)
    assert "3 event(s) (their dates not read)" in behind.text
    process_all(pipeline)
    counted = reconcile(pipeline.settings, TODAY)
    assert (counted.status, counted.in_flight.to_lake) == ("behind", None), counted.text
    assert "counted, not yet in the lake: at most 3 event(s)" in counted.text
    [row] = counted.campaigns
    assert (row.to_lake_conversions, row.to_lake_value) == (None, None)
    pipeline.cold.flush_all()
    assert reconcile(pipeline.settings, TODAY).exit_code == 0
