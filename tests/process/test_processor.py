"""The processor in this process, with a manual clock: dedup windows, tokens, routing."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from convtrack.clock import ManualClock
from convtrack.errors import LogUnavailable
from convtrack.log.base import LogRecord, next_positions
from convtrack.log.published import FirstCopies
from convtrack.model.processed import ProcessedEvent, decode_processed
from convtrack.process.base import Batch, Item, Step
from convtrack.process.runner import ProcessorRunner
from convtrack.runtime.embedded import Pipeline, build_chain
from tests.conftest import WRITE_KEY
from tests.support.inprocess import call, conversions, make_pipeline, process_all

MINUTE = 60.0
HOUR = 3600.0


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(start_us=1_796_000_000_000_000)


@pytest.fixture
def pipeline(tmp_path: Path, clock: ManualClock) -> Iterator[Pipeline]:
    built = make_pipeline(tmp_path / "data", clock)
    yield built
    built.close()


def event_date(clock: ManualClock) -> str:
    return datetime.fromtimestamp(clock.now_us() / 1e6, tz=UTC).strftime("%Y-%m-%d")


def purchase(clock: ManualClock, **kw: Any) -> dict[str, Any]:
    body = {
        "event_id": "order-1",
        "event_name": "Purchase",
        "user_id": "u1",
        "value": 1250,
        "currency": "EUR",
        "campaign_id": "spring",
        "timestamp": clock.now_us() // 1000,
    }
    body.update(kw)
    return body


def send(pipeline: Pipeline, body: dict[str, Any], key: str = WRITE_KEY) -> None:
    response = call(pipeline, "POST", "/v1/track", body, key=key)
    assert response.status_code == 202, response.text


def test_dedup_window_edges_with_a_moved_clock(pipeline: Pipeline, clock: ManualClock) -> None:
    date = event_date(clock)
    first = purchase(clock)
    send(pipeline, first)
    process_all(pipeline)
    clock.advance(23 * HOUR + 59 * MINUTE)
    send(pipeline, first)
    process_all(pipeline)
    assert conversions(pipeline, date, "spring")["conversions"] == 1
    clock.advance(2 * MINUTE)  # 24h01m after the first copy
    send(pipeline, first)
    process_all(pipeline)
    assert conversions(pipeline, date, "spring") == {
        "campaign_id": "spring",
        "date": date,
        "conversions": 2,
        "value": {"EUR": 2500},
        "excluded": {"bot": 0, "duplicate": 1, "not_a_conversion": 0},  # the copy at 23h59
    }


def test_dedup_survives_a_restart(tmp_path: Path, clock: ManualClock) -> None:
    date = event_date(clock)
    first = make_pipeline(tmp_path / "data", clock)
    send(first, purchase(clock))
    process_all(first)
    first.close()
    clock.advance(HOUR)
    second = make_pipeline(tmp_path / "data", clock)
    try:
        send(second, purchase(clock, timestamp=clock.now_us() // 1000 - 3_600_000))
        process_all(second)
        assert conversions(second, date, "spring")["conversions"] == 1
    finally:
        second.close()


def test_unprocessed_events_are_counted_after_a_restart(tmp_path: Path, clock: ManualClock) -> None:
    date = event_date(clock)
    first = make_pipeline(tmp_path / "data", clock)
    for i in range(5):
        send(first, purchase(clock, event_id=f"o{i}"))
    first.log.close()  # stop before the processor ran: the events wait in the log
    first.processed.close()
    first.hot.close()
    first.rejects.close()
    second = make_pipeline(tmp_path / "data", clock)
    try:
        process_all(second)
        assert conversions(second, date)["conversions"] == 5
    finally:
        second.close()


def test_conversion_token_reused_on_a_refreshed_page_counts_once(
    pipeline: Pipeline, clock: ManualClock
) -> None:
    date = event_date(clock)
    issued = call(pipeline, "POST", "/v1/conversion-tokens", {"order_id": "A-100"})
    assert issued.status_code == 200, issued.text
    token = issued.json()["conversion_token"]
    send(pipeline, purchase(clock, event_id="thanks-load-1", conversion_token=token))
    clock.advance(30 * MINUTE)
    send(pipeline, purchase(clock, event_id="thanks-load-2", conversion_token=token))
    process_all(pipeline)
    assert conversions(pipeline, date, "spring")["conversions"] == 1
    live = call(pipeline, "GET", "/v1/stats/live").json()
    assert live["duplicates_total"] == 1


def test_session_events_are_not_conversions(pipeline: Pipeline, clock: ManualClock) -> None:
    date = event_date(clock)
    send(pipeline, {"event_id": "pv", "event_name": "page_view", "session_id": "s1"})
    send(pipeline, {"event_id": "id", "event_name": "identify", "user_id": "u1"})
    send(pipeline, {"event_id": "lead", "event_name": "Lead", "user_id": "u1"})
    process_all(pipeline)
    assert conversions(pipeline, date) == {
        "campaign_id": None,
        "date": date,
        "conversions": 1,
        "value": {},
        "excluded": {"bot": 0, "duplicate": 0, "not_a_conversion": 2},
    }
    assert conversions(pipeline, date, "(none)")["conversions"] == 1


def test_conversion_event_names_setting(tmp_path: Path, clock: ManualClock) -> None:
    only_purchases = make_pipeline(
        tmp_path / "data", clock, conversions={"event_names": ["Purchase"]}
    )
    try:
        send(only_purchases, purchase(clock, event_id="p1"))
        send(only_purchases, purchase(clock, event_id="l1", event_name="Lead"))
        process_all(only_purchases)
        answer = conversions(only_purchases, event_date(clock))
        assert answer["conversions"] == 1 and answer["excluded"]["not_a_conversion"] == 1
    finally:
        only_purchases.close()


def test_an_undecodable_entry_is_dropped_and_counted(
    pipeline: Pipeline, clock: ManualClock
) -> None:
    import asyncio

    asyncio.run(pipeline.log.append([LogRecord("k", b"\x00not an envelope")]))
    send(pipeline, purchase(clock))
    process_all(pipeline)
    assert conversions(pipeline, event_date(clock))["conversions"] == 1
    metrics = pipeline.metrics.render().decode()
    assert 'convtrack_processor_dropped_total{reason="undecodable"} 1.0' in metrics
    assert pipeline.processor.lag().events == 0


def test_slow_events_are_latency_anomalies(pipeline: Pipeline, clock: ManualClock) -> None:
    send(pipeline, purchase(clock, event_id="fast"))
    process_all(pipeline)
    send(pipeline, purchase(clock, event_id="slow"))
    clock.advance(6)
    process_all(pipeline)
    live = call(pipeline, "GET", "/v1/stats/live").json()
    assert live["latency_anomalies_total"] == 1
    assert live["conversions"] == 2 and live["latency_samples"] == 2
    assert "convtrack_latency_anomalies_total 1.0" in pipeline.metrics.render().decode()


def test_stats_need_a_server_key_and_a_valid_date(pipeline: Pipeline) -> None:
    assert call(pipeline, "GET", "/v1/stats/conversions", key=WRITE_KEY).status_code == 403
    assert call(pipeline, "GET", "/v1/stats/live", key=WRITE_KEY).status_code == 403
    bad = call(pipeline, "GET", "/v1/stats/conversions?date=2026-02-30")
    assert bad.status_code == 400
    assert call(pipeline, "GET", "/v1/stats/live?minutes=0").status_code == 400


def test_live_view_reports_lag_and_campaigns(pipeline: Pipeline, clock: ManualClock) -> None:
    for i in range(3):
        send(pipeline, purchase(clock, event_id=f"e{i}", campaign_id=f"c{i % 2}"))
    before = call(pipeline, "GET", "/v1/stats/live").json()
    process_all(pipeline)
    after = call(pipeline, "GET", "/v1/stats/live").json()
    assert before["conversions"] == 0
    assert after["conversions"] == 3 and after["lag"] == {"events": 0, "seconds": 0.0}
    assert [c["campaign_id"] for c in after["campaigns"]] == ["c0", "c1"]
    assert after["value"] == {"EUR": 3750} and after["dead_letters"] == 0


def published(pipeline: Pipeline) -> list[ProcessedEvent]:
    consumer = pipeline.processed.consumer("test-reader")
    out: list[ProcessedEvent] = []
    while entries := consumer.poll(1000, 0.05):
        out.extend(decode_processed(e.payload) for e in entries)
    consumer.close()
    return out


def test_new_events_are_published_once_in_order(pipeline: Pipeline, clock: ManualClock) -> None:
    for event_id in ("a", "b", "a", "c"):
        send(pipeline, purchase(clock, event_id=event_id))
    send(pipeline, {"event_id": "pv", "event_name": "page_view", "session_id": "s"})
    process_all(pipeline)
    events = published(pipeline)
    assert [e.event.event_id for e in events] == ["a", "b", "c", "pv"]
    assert [e.is_conversion for e in events] == [True, True, True, False]
    assert events[0].campaign_id == "spring" and events[3].campaign_id == "(none)"
    assert events[0].counted_at_us >= events[0].processed_at_us >= events[0].logged_at_us
    assert [e.source_offset for e in events] == [0, 1, 3, 4]


def test_a_crash_between_counting_and_publishing_is_completed_on_restart(
    tmp_path: Path, clock: ManualClock
) -> None:
    date = event_date(clock)
    first = make_pipeline(tmp_path / "data", clock)
    for event_id in ("a", "b", "a", "c"):
        send(first, purchase(clock, event_id=event_id))
    consumer = first.log.consumer("processor")
    chain = build_chain(first.settings, first.hot, consumer, first.processed, clock, first.metrics)
    first.processed.close()  # publishing fails, as if the process died right after counting
    entries = consumer.poll(100, 1.0)
    with pytest.raises(LogUnavailable):
        chain.submit(
            Batch(items=[Item(entry=e) for e in entries], positions=next_positions(entries))
        )
    assert conversions(first, date)["conversions"] == 3
    consumer.close()
    first.log.close()
    first.hot.close()
    first.rejects.close()

    second = make_pipeline(tmp_path / "data", clock)
    try:
        process_all(second)
        assert [e.event.event_id for e in published(second)] == ["a", "b", "c"]
        assert conversions(second, date)["conversions"] == 3
        live = call(second, "GET", "/v1/stats/live").json()
        assert live["duplicates_total"] == 1
    finally:
        second.close()


def test_a_lost_hot_store_is_recounted_from_the_log(tmp_path: Path, clock: ManualClock) -> None:
    date = event_date(clock)
    first = make_pipeline(tmp_path / "data", clock)
    for event_id in ("a", "b", "a", "c"):
        send(first, purchase(clock, event_id=event_id))
    process_all(first)
    first.close()
    for path in (tmp_path / "data" / "hot").iterdir():
        path.unlink()  # the hot store's data is gone (a Redis without persistence, a lost disk)
    second = make_pipeline(tmp_path / "data", clock)
    try:
        send(second, purchase(clock, event_id="d"))
        process_all(second)
        assert conversions(second, date)["conversions"] == 4
        rule = FirstCopies()
        kept = [e.event.event_id for e in published(second) if rule.keep(0, e)]
        assert kept == ["a", "b", "c", "d"]
    finally:
        second.close()


class FailsOnce(Step):
    """A step with a bug that shows on the first batch only."""

    def __init__(self, next_step: Step) -> None:
        super().__init__(next_step)
        self.failed = False

    def process(self, batch: Batch) -> None:
        if not self.failed:
            self.failed = True
            raise RuntimeError("a bug, not a backend error")


def test_a_batch_that_fails_unexpectedly_once_is_committed_by_its_halves(
    pipeline: Pipeline, clock: ManualClock
) -> None:
    """A failure that is not a backend's splits the batch; the halves succeed, so a bug
    that shows once costs neither an event nor a quarantine row."""
    for event_id in ("a", "b", "c"):
        send(pipeline, purchase(clock, event_id=event_id))
    runner = ProcessorRunner(
        event_log=pipeline.log,
        processed=pipeline.processed,
        hot=pipeline.hot,
        make_chain=lambda consumer: FailsOnce(
            build_chain(
                pipeline.settings,
                pipeline.hot,
                consumer,
                pipeline.processed,
                clock,
                pipeline.metrics,
            )
        ),
        clock=clock,
        metrics=pipeline.metrics,
    )
    assert runner.run_once() == 3
    assert conversions(pipeline, event_date(clock))["conversions"] == 3
    assert [e.event.event_id for e in published(pipeline)] == ["a", "b", "c"]
    assert runner.quarantined == 0


def test_the_log_group_moves_once_a_second_of_the_processors_clock(
    pipeline: Pipeline, clock: ManualClock
) -> None:
    def logged_position() -> dict[int, int]:
        consumer = pipeline.log.consumer("processor")
        try:
            return consumer.committed()
        finally:
            consumer.close()

    send(pipeline, purchase(clock, event_id="a"))
    process_all(pipeline)
    first = logged_position()
    assert len(first) == 1  # one partition, past "a"
    send(pipeline, purchase(clock, event_id="b"))
    process_all(pipeline)
    assert logged_position() == first  # within the second: only the hot store moved
    clock.advance(1.0)
    send(pipeline, purchase(clock, event_id="c"))
    process_all(pipeline)
    assert logged_position() == {p: offset + 2 for p, offset in first.items()}  # past "c"
    assert conversions(pipeline, event_date(clock), "spring")["conversions"] == 3
