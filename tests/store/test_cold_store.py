"""The cold store on a local lake: round trip, exactly-once flushes, crash recovery."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from convtrack.clock import ManualClock
from convtrack.log.base import LogRecord
from convtrack.log.sqlite import SqliteLog
from convtrack.model.event import Envelope
from convtrack.model.processed import ProcessedEvent, encode_processed
from convtrack.observe.metrics import Metrics
from convtrack.runtime.backends import open_cold_store
from convtrack.store.cold.base import ColdStore
from convtrack.store.cold.maintain import compact, expire, purge_removed
from convtrack.store.cold.manifest import read_state
from convtrack.store.cold.query import connect
from convtrack.store.cold.tables import EventsSource
from convtrack.store.cold.writer import TableWriter
from tests.support.s3_fixtures import S3Target

T0 = 1_796_000_000_000_000


def processed(i: int, **kw: Any) -> ProcessedEvent:
    envelope: dict[str, Any] = {
        "event_id": f"e{i}",
        "source": "default",
        "event_name": "Purchase",
        "event_time_us": T0 + i,
        "received_at_us": T0 + i + 5,
        "user_id": f"u{i}",
        "value": 100 + i,
        "currency": "USD",
        "campaign_id": "spring",
        "properties": {"sku": "ü-1", "big": 2**70},
        "user": {"email": "a" * 64},
    }
    envelope.update(kw.pop("envelope", {}))
    base: dict[str, Any] = {
        "event": Envelope(**envelope),
        "source_partition": 0,
        "source_offset": i,
        "campaign_id": envelope["campaign_id"] or "(none)",
        "event_date": "2026-11-29",
        "is_conversion": True,
        "logged_at_us": T0 + 10,
        "processed_at_us": T0 + 20,
        "counted_at_us": T0 + 30,
    }
    base.update(kw)
    return ProcessedEvent(**base)


class Harness:
    def __init__(self, root: Path, lake: ColdStore) -> None:
        self.root = root
        self.clock = ManualClock(start_us=T0)
        self.log = SqliteLog(root / "processed.db")
        self.lake = lake
        self.writer = self.new_writer()

    def new_writer(self) -> TableWriter:
        return TableWriter(
            lake=self.lake,
            source=EventsSource(self.log.consumer("cold")),
            clock=self.clock,
            metrics=Metrics(),
            flush_interval_secs=60,
            flush_max_rows=1000,
        )

    def publish(self, events: list[ProcessedEvent]) -> None:
        records = [LogRecord("k", encode_processed(e)) for e in events]
        asyncio.run(self.log.append(records))

    def pump(self, writer: TableWriter | None = None) -> None:
        w = writer or self.writer
        while w.poll_once(timeout_secs=0.01):
            pass

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        con = connect(self.lake)
        try:
            return con.execute(sql).fetchall()
        finally:
            con.close()


@pytest.fixture(params=["local", "s3"])
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    """The same cold-store tests on a local directory and on a real S3 server."""
    if request.param == "local":
        lake = open_cold_store(str(tmp_path / "lake"))
    else:
        target: S3Target = request.getfixturevalue("s3_bucket")
        lake = open_cold_store(target.uri, environ=target.env)
    h = Harness(tmp_path, lake)
    yield h
    h.log.close()


def test_flush_and_query_round_trip_every_column(harness: Harness) -> None:
    events = [
        processed(0),
        processed(1, envelope={"campaign_id": "fall/ü sale", "value": 2**62, "currency": "JPY"},
                  campaign_id="fall/ü sale"),
        processed(2, envelope={"value": None, "currency": None, "user_id": None,
                               "session_id": "s-😀"}, is_conversion=False, event_date="2026-11-28"),
    ]  # fmt: skip
    harness.publish(events)
    harness.pump()
    assert harness.rows("select count(*) from events") == [(0,)]  # not flushed yet
    harness.clock.advance(61)
    harness.pump()
    rows = harness.rows(
        "select event_id, campaign_id, value, currency, session_id, is_conversion, event_date,"
        " properties, epoch_us(event_time), epoch_us(received_at), source_offset"
        " from events order by event_id"
    )
    assert rows == [
        ("e0", "spring", 100, "USD", None, True, "2026-11-29",
         '{"sku":"ü-1","big":1180591620717411303424}', T0, T0 + 5, 0),
        ("e1", "fall/ü sale", 2**62, "JPY", None, True, "2026-11-29",
         '{"sku":"ü-1","big":1180591620717411303424}', T0 + 1, T0 + 6, 1),
        ("e2", "spring", None, None, "s-😀", False, "2026-11-28",
         '{"sku":"ü-1","big":1180591620717411303424}', T0 + 2, T0 + 7, 2),
    ]  # fmt: skip
    files = sorted(read_state(harness.lake, "events").files)
    assert files == [
        "events/event_date=2026-11-28/campaign_id=spring/part-0-000000000000-000000000002.parquet",
        "events/event_date=2026-11-29/campaign_id=fall%2F%C3%BC%20sale/part-0-000000000000-000000000002.parquet",
        "events/event_date=2026-11-29/campaign_id=spring/part-0-000000000000-000000000002.parquet",
    ]
    columns = {r[0] for r in harness.rows("describe events")}
    contract = {
        "event_id",
        "event_name",
        "source",
        "user_id",
        "session_id",
        "event_time",
        "received_at",
        "value",
        "currency",
        "campaign_id",
        "campaign_source",
        "campaign_medium",
        "device_type",
        "country_code",
        "is_bot",
        "properties",
    }
    assert contract <= columns


def test_size_threshold_flushes_without_waiting(harness: Harness) -> None:
    writer = TableWriter(
        lake=harness.lake, source=EventsSource(harness.log.consumer("cold")), clock=harness.clock,
        metrics=Metrics(), flush_interval_secs=3600, flush_max_rows=10,
    )  # fmt: skip
    harness.publish([processed(i) for i in range(25)])
    harness.pump(writer)
    assert harness.rows("select count(*) from events") == [(20,)]
    assert writer.buffered == 5


def test_a_flush_that_crashed_before_its_manifest_is_invisible_then_redone(
    harness: Harness,
) -> None:
    harness.publish([processed(i) for i in range(5)])
    harness.pump()
    # the crash: the data file is written, the manifest is not
    orphan = (
        "events/event_date=2026-11-29/campaign_id=spring/part-0-000000000000-000000000003.parquet"
    )
    harness.lake.put(orphan, b"PAR1 not really")
    assert harness.rows("select count(*) from events") == [(0,)]
    restarted = harness.new_writer()
    harness.pump(restarted)
    restarted.flush()
    assert orphan not in harness.lake.list("events")
    assert harness.rows("select count(*), count(distinct event_id) from events") == [(5, 5)]


def test_a_flush_that_crashed_after_its_manifest_is_not_repeated(harness: Harness) -> None:
    harness.publish([processed(i) for i in range(5)])
    harness.pump()
    harness.writer.flush()
    # the crash: manifest written, but the source position was never committed
    consumer = harness.log.consumer("cold")
    assert consumer.committed() == {0: 5}
    consumer.commit({0: 0})
    consumer.close()
    restarted = harness.new_writer()
    harness.publish([processed(5)])
    harness.pump(restarted)
    restarted.flush()
    assert harness.rows("select count(*), count(distinct event_id) from events") == [(6, 6)]


def test_query_sees_only_manifested_files(harness: Harness) -> None:
    harness.publish([processed(0)])
    harness.pump()
    harness.writer.flush()
    stray = "events/event_date=2026-11-29/campaign_id=spring/stray.parquet"
    harness.lake.put(stray, harness.lake.read(next(iter(read_state(harness.lake, "events").files))))
    assert harness.rows("select count(*) from events") == [(1,)]


def test_compaction_while_queries_run(harness: Harness) -> None:
    import threading

    for batch in range(6):  # six small flushes into the same day
        harness.publish([processed(batch * 10 + i) for i in range(10)])
        harness.pump()
        harness.writer.flush()
    assert len(read_state(harness.lake, "events").files) == 6
    seen: list[tuple[int, int]] = []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            seen.extend(harness.rows("select count(*), count(distinct event_id) from events"))

    thread = threading.Thread(target=reader)
    thread.start()
    merges = compact(harness.lake, "events", closed_before="2026-11-30", now_us=T0)
    purge_removed(harness.lake, "events", now_us=T0 + 1, grace_secs=3600)  # too early: kept
    stop.set()
    thread.join()
    assert merges == 1
    assert seen and set(seen) == {(60, 60)}
    state = read_state(harness.lake, "events")
    assert len(state.files) == 1 and len(state.removed) == 6
    assert len(harness.lake.list("events")) == 7  # the inputs stay during the grace period
    assert purge_removed(harness.lake, "events", now_us=T0 + 3_600_000_001, grace_secs=3600) == 6
    assert harness.rows("select count(*), min(source_offset), max(source_offset) from events") == [
        (60, 0, 59)
    ]


def test_compaction_leaves_open_days_alone(harness: Harness) -> None:
    for batch in range(3):
        harness.publish([processed(batch, event_date="2026-11-29")])
        harness.pump()
        harness.writer.flush()
    assert compact(harness.lake, "events", closed_before="2026-11-29", now_us=T0) == 0
    assert len(read_state(harness.lake, "events").files) == 3


def test_retention_removes_old_partitions(harness: Harness) -> None:
    harness.publish([processed(0, event_date="2026-10-01"), processed(1, event_date="2026-11-29")])
    harness.pump()
    harness.writer.flush()
    assert expire(harness.lake, "events", keep_from="2026-11-01", now_us=T0) == 1
    assert harness.rows("select event_date from events") == [("2026-11-29",)]
