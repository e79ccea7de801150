"""The SQLite log against the log contract, plus what only it promises."""

from __future__ import annotations

import asyncio
import random
import sqlite3
from pathlib import Path

import pytest

from convtrack.errors import LogError, LogUnavailable, is_transient
from convtrack.log.base import EventLog, LogRecord
from convtrack.log.sqlite import SqliteConsumer, SqliteLog
from tests.support.contract.log_contract import LogContract, append, drain
from tests.support.sqlite_faults import locked, make_unreadable, short_busy_timeout


class TestSqliteLogContract(LogContract):
    def open_log(self, path: Path) -> EventLog:
        return SqliteLog(path / "events.db")


def test_group_commit_shares_one_commit_among_concurrent_appends(tmp_path: Path) -> None:
    commits: list[int] = []
    log = SqliteLog(tmp_path / "events.db", on_commit=lambda n, _s: commits.append(n))

    async def many() -> None:
        await asyncio.gather(*(log.append([LogRecord("k", b"x")]) for _ in range(500)))

    asyncio.run(many())
    log.close()
    assert sum(commits) == 500
    assert len(commits) < 500  # many requests shared a commit


def test_wal_mode_and_full_sync_by_default(tmp_path: Path) -> None:
    log = SqliteLog(tmp_path / "events.db")
    append(log, [LogRecord("k", b"x")])
    log.close()
    conn = sqlite3.connect(tmp_path / "events.db")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


def test_backpressure_when_too_many_pending(tmp_path: Path) -> None:
    log = SqliteLog(tmp_path / "events.db", max_pending_events=10)
    with pytest.raises(LogUnavailable):
        append(log, [LogRecord("k", b"x")] * 11)
    assert append(log, [LogRecord("k", b"x")] * 10) == list(range(10))
    log.close()


def test_failed_commit_makes_log_unavailable_then_recovers(tmp_path: Path) -> None:
    """A commit that fails answers 503 for its callers; offsets are not burnt."""
    log = SqliteLog(tmp_path / "events.db")
    append(log, [LogRecord("k", b"first")])
    blocker = sqlite3.connect(tmp_path / "events.db", timeout=0)
    blocker.execute("BEGIN EXCLUSIVE")  # holds the write lock: the writer's BEGIN times out
    log._writer._conn.execute("PRAGMA busy_timeout=50")
    with pytest.raises(LogUnavailable):
        append(log, [LogRecord("k", b"lost")])
    assert not log.status().writable
    blocker.rollback()
    blocker.close()
    assert append(log, [LogRecord("k", b"second")]) == [1]
    assert log.status().writable
    log.close()


def test_a_locked_log_refuses_an_offset_commit_with_a_log_error_then_takes_it(
    tmp_path: Path,
) -> None:
    """The consumer's own errors are the log's (LogError, transient), never sqlite3's."""
    path = tmp_path / "events.db"
    log = SqliteLog(path)
    append(log, [LogRecord("k", b"x")])
    consumer = SqliteConsumer(log, "g")
    short_busy_timeout(consumer._conn)
    try:
        assert [e.offset for e in consumer.poll(10, 0.0)] == [0]
        with locked(path):
            with pytest.raises(LogError, match="committing the offsets of g") as caught:
                consumer.commit({0: 1})
            assert isinstance(caught.value.__cause__, sqlite3.OperationalError)
            assert is_transient(caught.value)
        consumer.commit({0: 1})
        assert consumer.committed() == {0: 1}
    finally:
        consumer.close()
        log.close()


def test_an_unreadable_log_fails_poll_and_commit_with_a_log_error(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    log = SqliteLog(path)
    append(log, [LogRecord("k", b"x")])
    consumer = SqliteConsumer(log, "g")
    log.close()
    make_unreadable(path)
    try:
        with pytest.raises(LogError, match="reading the event log for g") as polled:
            consumer.poll(10, 0.0)
        assert isinstance(polled.value.__cause__, sqlite3.DatabaseError)
        with pytest.raises(LogError, match="committing the offsets of g"):
            consumer.commit({0: 1})
        with pytest.raises(LogError, match="reading the offsets of g"):
            consumer.committed()
    finally:
        consumer.close()


def test_an_unreadable_log_fails_its_reads_with_a_log_error(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    log = SqliteLog(path)
    append(log, [LogRecord("k", b"x")])
    make_unreadable(path)
    try:
        with pytest.raises(LogError):
            log.last_entries()
        with pytest.raises(LogError):
            log.lag({0: 0})
    finally:
        log.close()


def test_one_row_per_group_commit(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    log = SqliteLog(path)
    append(log, [LogRecord("a", b"1"), LogRecord("b", b"2"), LogRecord("c", b"3")])
    append(log, [LogRecord("d", b"4")])
    log.close()
    conn = sqlite3.connect(path)
    frames = conn.execute("SELECT first_offset, count FROM frames ORDER BY first_offset").fetchall()
    conn.close()
    assert frames == [(0, 3), (3, 1)]


def test_reads_across_frames_match_what_was_appended_whatever_the_poll_size(
    tmp_path: Path,
) -> None:
    rng = random.Random(11)
    log = SqliteLog(tmp_path / "events.db")
    expected: list[tuple[str, bytes]] = []
    for batch in range(40):
        records = [
            LogRecord(f"k{batch}", f"{batch}-{i}".encode()) for i in range(rng.randrange(1, 30))
        ]
        expected += [(r.key, r.payload) for r in records]
        append(log, records)
    consumer = SqliteConsumer(log, "g")
    try:
        for _ in range(200):
            if rng.random() < 0.2:
                position = rng.randrange(len(expected) + 1)
                consumer.seek({0: position})
            else:
                position = consumer._position
            got = consumer.poll(rng.randrange(1, 50), 0.0)
            assert [e.offset for e in got] == list(range(position, position + len(got)))
            assert [(e.key, e.payload) for e in got] == expected[position : position + len(got)]
            assert got or position == len(expected)
    finally:
        consumer.close()
        log.close()


def test_a_log_of_the_row_per_entry_layout_is_read_and_appended_after(tmp_path: Path) -> None:
    """A data dir from before frames: its rows are read as they are, and new appends
    take the offsets after them."""
    path = tmp_path / "events.db"
    old = sqlite3.connect(path)
    old.executescript(
        "CREATE TABLE log (offset INTEGER PRIMARY KEY, key TEXT NOT NULL,"
        " logged_at_us INTEGER NOT NULL, payload BLOB NOT NULL);"
        "CREATE TABLE consumer_offsets (grp TEXT NOT NULL, partition INTEGER NOT NULL,"
        " next_offset INTEGER NOT NULL, PRIMARY KEY (grp, partition));"
    )
    old.executemany(
        "INSERT INTO log VALUES (?, ?, ?, ?)", [(i, f"old{i}", 1_000 + i, b"old") for i in range(3)]
    )
    old.execute("INSERT INTO consumer_offsets VALUES ('g', 0, 1)")
    old.commit()
    old.close()
    log = SqliteLog(path)
    try:
        assert log.end_offset() == 3
        assert log.lag({0: 1}).events == 2
        assert append(log, [LogRecord("new", b"a"), LogRecord("new", b"b")]) == [3, 4]
        entries = drain(log, "g")
        assert [(e.offset, e.key, e.payload) for e in entries] == [
            (1, "old1", b"old"), (2, "old2", b"old"), (3, "new", b"a"), (4, "new", b"b"),
        ]  # fmt: skip
        assert entries[0].logged_at_us == 1_001
        assert log.last_entries()[0].offset == 4
        assert log.lag({0: 3}).events == 2
    finally:
        log.close()
