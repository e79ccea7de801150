"""Two processors on one partition (a rebalance, a paused process): each event once.

The second processor has its own hot-store connection and its own processed-log
writer on the same files, as a second process would. Counting must stay exact;
the processed log may hold a zombie's late copy, and readers applying the
first-copy rule (log/published.py) must see each new event once, in order;
the lake too.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from convtrack.clock import ManualClock
from convtrack.log.published import FirstCopies
from convtrack.log.sqlite import SqliteLog
from convtrack.model.processed import ProcessedEvent, decode_processed
from convtrack.observe.metrics import Metrics
from convtrack.process.base import Batch, Item
from convtrack.process.runner import ProcessorRunner
from convtrack.runtime.embedded import Pipeline, build_chain
from convtrack.store.cold.query import connect
from convtrack.store.hot.sqlite import SqliteHotStore
from tests.support.inprocess import call, conversions, make_pipeline

T0 = 1_796_000_000_000_000


@dataclass
class Other:
    """A second processor on the same data dir, with connections of its own."""

    runner: ProcessorRunner
    hot: SqliteHotStore
    processed: SqliteLog

    def close(self) -> None:
        self.runner.stop(drain_secs=0.0)
        self.processed.close()
        self.hot.close()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(start_us=T0)


@pytest.fixture
def pipeline(tmp_path: Path, clock: ManualClock) -> Iterator[Pipeline]:
    built = make_pipeline(tmp_path / "data", clock)
    yield built
    built.close()


def other_processor(pipeline: Pipeline, clock: ManualClock) -> Other:
    data_dir = pipeline.settings.data_dir
    hot = SqliteHotStore(data_dir / "hot" / "hot.db")
    processed = SqliteLog(data_dir / "log" / "processed.db", synchronous="normal")
    metrics = Metrics()
    runner = ProcessorRunner(
        event_log=pipeline.log,
        processed=processed,
        hot=hot,
        make_chain=lambda consumer: build_chain(
            pipeline.settings, hot, consumer, processed, clock, metrics
        ),
        clock=clock,
        metrics=metrics,
        max_batch=7,
    )
    return Other(runner, hot, processed)


def send(pipeline: Pipeline, clock: ManualClock, event_ids: list[str]) -> None:
    for event_id in event_ids:
        body = {
            "event_id": event_id,
            "event_name": "Purchase",
            "user_id": f"u-{event_id}",
            "value": 100,
            "currency": "USD",
            "campaign_id": "spring",
            "timestamp": clock.now_us() // 1000,
        }
        assert call(pipeline, "POST", "/v1/track", body).status_code == 202


def raw_processed(pipeline: Pipeline) -> list[tuple[int, ProcessedEvent]]:
    consumer = pipeline.processed.consumer("test-reader")
    out: list[tuple[int, ProcessedEvent]] = []
    while entries := consumer.poll(1000, 0.05):
        out.extend((e.partition, decode_processed(e.payload)) for e in entries)
    consumer.close()
    return out


def first_copies(records: list[tuple[int, ProcessedEvent]]) -> list[str]:
    rule = FirstCopies()
    return [event.event.event_id for partition, event in records if rule.keep(partition, event)]


def today(clock: ManualClock) -> str:
    return datetime.fromtimestamp(clock.now_us() / 1e6, tz=UTC).strftime("%Y-%m-%d")


def lake_event_ids(pipeline: Pipeline) -> list[Any]:
    pipeline.cold.flush_all()
    con = connect(pipeline.lake)
    try:
        rows = con.execute("select event_id from events order by source_offset").fetchall()
        return [r[0] for r in rows]
    finally:
        con.close()


def test_a_zombie_batch_in_flight_is_absorbed_and_the_zombie_then_steps_aside(
    pipeline: Pipeline, clock: ManualClock
) -> None:
    zombie = other_processor(pipeline, clock)
    try:
        send(pipeline, clock, [f"a{i}" for i in range(5)])
        while zombie.runner.run_once():  # the zombie owned the partition first
            pass
        send(pipeline, clock, [f"b{i}" for i in range(5)] + ["a1"])
        # The zombie has taken its next batch, then stalls (a pause, a lost session)...
        in_flight = pipeline.log.consumer("processor")
        in_flight.seek({0: 5})
        entries = in_flight.poll(100, 1.0)
        chain = build_chain(
            pipeline.settings, zombie.hot, in_flight, zombie.processed, clock, Metrics()
        )
        # ...while the new owner resumes where publishing stopped and handles it all.
        while pipeline.processor.run_once():
            pass
        # The zombie wakes up and finishes its batch: a late copy of each new event.
        chain.submit(Batch(items=[Item(entry=e) for e in entries], positions={0: 11}))
        in_flight.close()
        send(pipeline, clock, ["c0"])
        # Polling again, it sees the partition applied past where it reads and moves to
        # the processed log's end instead of publishing b0..b4 a third time.
        while zombie.runner.run_once():
            pass
        assert zombie.runner.resumes >= 1
    finally:
        zombie.close()
    records = raw_processed(pipeline)
    expected = [f"a{i}" for i in range(5)] + [f"b{i}" for i in range(5)] + ["c0"]
    assert len(records) == len(expected) + 5  # the in-flight batch's late copies only
    assert first_copies(records) == expected
    assert conversions(pipeline, today(clock), "spring")["conversions"] == 11
    assert lake_event_ids(pipeline) == expected


def test_two_processors_racing_under_load(pipeline: Pipeline, clock: ManualClock) -> None:
    other = other_processor(pipeline, clock)
    stop = threading.Event()
    errors: list[BaseException] = []

    def run(runner: ProcessorRunner) -> None:
        try:
            while not stop.is_set():
                runner.run_once()
        except BaseException as exc:
            errors.append(exc)
            raise

    threads = [threading.Thread(target=run, args=(r,)) for r in (pipeline.processor, other.runner)]
    for thread in threads:
        thread.start()
    ids = [f"e{i}" for i in range(300)]
    try:
        for start in range(0, len(ids), 30):
            chunk = ids[start : start + 30]
            send(pipeline, clock, chunk + chunk[:3])  # retries: duplicates to drop
        deadline = time.monotonic() + 60
        while not errors and time.monotonic() < deadline:
            if len(set(first_copies(raw_processed(pipeline)))) >= len(ids):
                break
            stop.wait(0.05)
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
        other.close()
    assert not errors
    records = raw_processed(pipeline)
    assert first_copies(records) == ids
    assert conversions(pipeline, today(clock), "spring")["conversions"] == len(ids)
    assert lake_event_ids(pipeline) == ids
