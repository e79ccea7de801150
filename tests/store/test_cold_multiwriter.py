"""Several writers on one lake: racing flushes of the same source partition, zombie copies.

Every test runs on a local directory and on a real S3 server (SeaweedFS),
whose conditional PUT (``If-None-Match: *``) is what makes the race safe.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from convtrack.clock import Clock, ManualClock, SystemClock
from convtrack.errors import StoreError
from convtrack.log.base import LogRecord
from convtrack.log.sqlite import SqliteLog
from convtrack.model.event import Envelope
from convtrack.model.processed import ProcessedEvent, encode_processed
from convtrack.observe.metrics import Metrics
from convtrack.runtime.backends import open_cold_store
from convtrack.store.cold.base import ColdStore
from convtrack.store.cold.manifest import ManifestEntry, chain_head, commit_flush, read_state
from convtrack.store.cold.query import connect
from convtrack.store.cold.tables import EventsSource
from convtrack.store.cold.writer import TableWriter
from tests.support.s3_fixtures import S3Target
from tests.support.wrapped_lake import WrappedLake

T0 = 1_796_000_000_000_000


def processed(source_offset: int, campaign: str = "spring") -> ProcessedEvent:
    envelope = Envelope(
        event_id=f"e{source_offset}",
        source="default",
        event_name="Purchase",
        event_time_us=T0 + source_offset,
        received_at_us=T0 + source_offset,
        user_id=f"u{source_offset % 5}",
        value=100,
        currency="USD",
        campaign_id=campaign,
    )
    return ProcessedEvent(
        event=envelope,
        source_partition=0,
        source_offset=source_offset,
        campaign_id=campaign,
        event_date="2026-11-29" if source_offset % 3 else "2026-11-28",
        is_conversion=True,
        logged_at_us=T0,
        processed_at_us=T0,
        counted_at_us=T0,
    )


class Lakes:
    """A processed log and a way to open the lake again (as another process would)."""

    def __init__(self, root: Path, open_lake: Callable[[], ColdStore]) -> None:
        self.log = SqliteLog(root / "processed.db")
        self.open_lake = open_lake
        self.clock = ManualClock(start_us=T0)

    def writer(
        self, max_rows: int, interval_secs: float = 3600, clock: Clock | None = None
    ) -> TableWriter:
        return TableWriter(
            lake=self.open_lake(),
            source=EventsSource(self.log.consumer("cold")),
            clock=clock or self.clock,
            metrics=Metrics(),
            flush_interval_secs=interval_secs,
            flush_max_rows=max_rows,
        )

    def publish(self, source_offsets: list[int]) -> None:
        records = [LogRecord("k", encode_processed(processed(i))) for i in source_offsets]
        asyncio.run(self.log.append(records))

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        con = connect(self.open_lake())
        try:
            return con.execute(sql).fetchall()
        finally:
            con.close()

    def event_ids(self) -> list[str]:
        return [r[0] for r in self.rows("select event_id from events order by source_offset")]


@pytest.fixture(params=["local", "s3"])
def lakes(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Lakes]:
    if request.param == "local":
        uri = str(tmp_path / "lake")
        opened = Lakes(tmp_path, lambda: open_cold_store(uri))
    else:
        target: S3Target = request.getfixturevalue("s3_bucket")
        opened = Lakes(tmp_path, lambda: open_cold_store(target.uri, environ=target.env))
    yield opened
    opened.log.close()


def pump(writer: TableWriter) -> None:
    while writer.poll_once(timeout_secs=0.0):
        pass


def test_conditional_create_has_exactly_one_winner(lakes: Lakes) -> None:
    lake = lakes.open_lake()
    lake.ensure_ready()
    results: list[bool] = []
    barrier = threading.Barrier(6)

    def create(n: int) -> None:
        own = lakes.open_lake()
        barrier.wait()
        results.append(own.put_if_absent("_manifest/x/one.json", f"writer {n}".encode()))

    threads = [threading.Thread(target=create, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [False] * 5 + [True]
    assert lake.read("_manifest/x/one.json").startswith(b"writer ")
    assert lake.list("_manifest/x") == ["_manifest/x/one.json"]


def test_the_second_writer_of_a_range_loses_and_continues_after_the_winner(
    lakes: Lakes,
) -> None:
    lakes.publish(list(range(10)))
    first, second = lakes.writer(max_rows=1000), lakes.writer(max_rows=1000)
    first.recover()
    second.recover()  # both start at the chain's end, position 0
    pump(first)
    pump(second)
    assert first.flush() == 10
    assert second.flush() == 0  # lost the race for position 0: nothing of it is visible
    assert second.races_lost == 1
    lake = lakes.open_lake()
    flush_files = [p for p in lake.list("events") if "/part-" in p]
    assert sorted(flush_files) == sorted(read_state(lake, "events").files)  # loser cleaned up
    lakes.publish(list(range(10, 15)))
    pump(second)
    assert second.flush() == 5
    pump(first)
    assert first.flush() == 0 and first.races_lost == 1
    assert lakes.event_ids() == [f"e{i}" for i in range(15)]


def test_racing_writers_under_load_write_every_row_once(lakes: Lakes) -> None:
    total = 600
    writers = [
        lakes.writer(max_rows=n, interval_secs=0.3, clock=SystemClock()) for n in (7, 11, 29)
    ]
    for writer in writers:
        writer.recover()  # all at position 0 before anyone flushes: a race is certain
    stop = threading.Event()
    errors: list[BaseException] = []

    def run(writer: TableWriter) -> None:
        try:
            while not stop.is_set():
                writer.poll_once(timeout_secs=0.01)
        except BaseException as exc:
            errors.append(exc)
            raise

    threads = [threading.Thread(target=run, args=(w,)) for w in writers]
    for thread in threads:
        thread.start()
    for start in range(0, total, 50):
        # A stale copy of the previous chunk's first event rides along, as a zombie
        # processor's late publish would.
        stale = [start - 50] if start else []
        lakes.publish(stale + list(range(start, start + 50)))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not errors:
        state = read_state(lakes.open_lake(), "events")
        if sum(f.rows for f in state.files.values()) >= total:
            break
        time.sleep(0.05)
    stop.set()
    for thread in threads:
        thread.join(30)
    assert not errors
    assert sum(w.races_lost for w in writers) >= 1
    assert lakes.rows("select count(*), count(distinct event_id) from events") == [(total, total)]
    assert lakes.event_ids() == [f"e{i}" for i in range(total)]


def test_a_zombie_copy_after_a_restart_is_still_dropped(lakes: Lakes) -> None:
    lakes.publish(list(range(10)))
    writer = lakes.writer(max_rows=1000)
    pump(writer)
    writer.flush()
    restarted = lakes.writer(max_rows=1000)  # must learn the filter's state from the manifest
    lakes.publish([4, 9, 10, 11])  # a late copy from a zombie processor, then new events
    pump(restarted)
    restarted.flush()
    assert lakes.event_ids() == [f"e{i}" for i in range(12)]


class LostAnswerLake(WrappedLake):
    """A real lake whose first conditional create succeeds but answers with an error."""

    answers_lost = 0

    def put_if_absent(self, relative: str, data: bytes) -> bool:
        created = super().put_if_absent(relative, data)
        if LostAnswerLake.answers_lost == 0:
            LostAnswerLake.answers_lost += 1
            raise StoreError("connection reset (the create went through)")
        return created


@pytest.mark.parametrize("more_rows_before_retry", [False, True])
def test_a_retry_after_a_lost_answer_keeps_its_own_commit(
    lakes: Lakes, more_rows_before_retry: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(LostAnswerLake, "answers_lost", 0)
    lakes.publish(list(range(5)))
    plain = lakes.open_lake()
    flaky = LostAnswerLake(plain)
    writer = TableWriter(
        lake=flaky,
        source=EventsSource(lakes.log.consumer("cold")),
        clock=lakes.clock,
        metrics=Metrics(),
        flush_interval_secs=3600,
        flush_max_rows=1000,
    )
    pump(writer)
    with pytest.raises(StoreError):
        writer.flush()
    if more_rows_before_retry:
        lakes.publish(list(range(5, 8)))
        pump(writer)
    writer.flush()
    pump(writer)
    writer.flush()
    assert writer.races_lost == (1 if more_rows_before_retry else 0)
    expected = 8 if more_rows_before_retry else 5
    assert lakes.event_ids() == [f"e{i}" for i in range(expected)]
    lake = lakes.open_lake()
    assert sorted(p for p in lake.list("events")) == sorted(read_state(lake, "events").files)


def test_chain_head_is_the_newest_flush_of_exactly_that_partition(lakes: Lakes) -> None:
    lake = lakes.open_lake()
    lake.ensure_ready()

    def flush(partition: int, first: int, last: int) -> None:
        entry = ManifestEntry(
            table="events",
            kind="flush",
            source_partition=partition,
            first=first,
            last=last,
            created_at_us=T0,
            source_through=last * 10,
        )
        assert commit_flush(lake, entry) is entry

    flush(1, 0, 9)
    flush(1, 10, 999_999)
    flush(1, 1_000_000, 1_000_004)
    flush(10, 0, 1_000_009)
    head = chain_head(lake, "events", 1)
    assert head is not None and (head.first, head.last) == (1_000_000, 1_000_004)
    assert head.source_through == 10_000_040
    head = chain_head(lake, "events", 10)
    assert head is not None and head.last == 1_000_009
    assert chain_head(lake, "events", 2) is None
    state = read_state(lake, "events")
    assert state.flushed_through == {1: 1_000_004, 10: 1_000_009}
