"""The SQLite log against the log contract, plus what only it promises."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from convtrack.errors import LogError, LogUnavailable, is_transient
from convtrack.log.base import EventLog, LogRecord
from convtrack.log.sqlite import SqliteConsumer, SqliteLog
from tests.support.contract.log_contract import LogContract, append
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
