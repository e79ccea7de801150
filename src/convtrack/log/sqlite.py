"""The embedded event log: one SQLite database in WAL mode, group-committed.

One partition. Offsets are assigned inside each group commit's write
transaction, in commit order, so a reader never sees a gap that fills in
later, and several processes may append to one file (SQLite's write lock
orders them). Readers in other processes see new entries by polling. ``synchronous=full`` (the
default) fsyncs each group commit: power-loss safe. ``normal`` survives a
process crash but may lose the last commits on power loss.

SQLite's errors leave as ours: an append that cannot be made durable raises
``LogUnavailable``; a failed read or offset commit raises ``LogError`` (as the
Kafka log does), raised from the ``sqlite3.Error``.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from convtrack.clock import Clock, SystemClock
from convtrack.errors import LogError, LogUnavailable
from convtrack.log.base import EventLog, LogConsumer, LogEntry, LogLag, LogRecord, LogStatus
from convtrack.log.sqlite_frames import (
    END_OFFSET,
    PARTITION,
    SCHEMA,
    FrameReader,
    frame_body,
    last_entry,
    logged_at,
)
from convtrack.sqlitekit import GroupCommitter, connect, translated


def _log_error(message: str, exc: sqlite3.Error) -> LogError:
    return LogError(message)


class SqliteLog(EventLog):
    def __init__(
        self,
        path: Path,
        *,
        synchronous: str = "full",
        max_pending_events: int = 200_000,
        max_commit_events: int = 20_000,
        clock: Clock | None = None,
        on_commit: Callable[[int, float], None] | None = None,
        other_writers_poll_secs: float = 0.05,
    ) -> None:
        """``other_writers_poll_secs``: how often a waiting consumer looks for entries that
        another process appended (this process's own appends wake it at once)."""
        self.path = path
        self.other_writers_poll_secs = other_writers_poll_secs
        self.synchronous = synchronous
        self.clock: Clock = clock or SystemClock()
        try:
            conn = connect(path, synchronous)
            conn.executescript(SCHEMA)
            row = conn.execute(END_OFFSET).fetchone()
            reader = connect(path, synchronous)
        except sqlite3.Error as exc:
            raise LogError(f"cannot open the event log at {path}: {exc}") from exc
        self._next_offset: int = row[0]
        self._pending_next = self._next_offset
        self._wrote = False
        self._new_data = threading.Condition()
        self._on_commit = on_commit
        self._writer: GroupCommitter[Sequence[LogRecord], list[int]] = GroupCommitter(
            "log", conn, self._write, max_pending_events, max_commit_events, self._committed,
            unavailable=LogUnavailable,
        )  # fmt: skip
        self._conn = conn
        self._reader = reader
        self._reader_lock = threading.Lock()

    def _write(
        self, conn: sqlite3.Connection, batches: Sequence[Sequence[LogRecord]]
    ) -> list[list[int]]:
        # Read under the write lock: another process may have appended since our last commit.
        first = conn.execute(END_OFFSET).fetchone()[0]
        body, count = frame_body(batches)
        conn.execute(
            "INSERT INTO frames VALUES (?, ?, ?, ?)", (first, count, self.clock.now_us(), body)
        )
        results: list[list[int]] = []
        offset = first
        for records in batches:
            results.append(list(range(offset, offset + len(records))))
            offset += len(records)
        # These offsets exist only once COMMIT returns (see _committed); after a failed
        # commit the next batch reuses the same numbers.
        self._pending_next = offset
        return results

    async def append(self, records: Sequence[LogRecord]) -> list[int]:
        if not records:
            return []
        offsets = await self._writer.submit(records, len(records))
        return offsets

    def append_blocking(self, records: Sequence[LogRecord]) -> list[int]:
        if not records:
            return []
        return self._writer.submit_blocking(records, len(records))

    def last_entries(self) -> dict[int, LogEntry]:
        with self._reader_lock, translated("reading the event log failed", _log_error):
            entry = last_entry(self._reader)
        return {} if entry is None else {PARTITION: entry}

    def _committed(self, count: int, secs: float) -> None:
        self._next_offset = self._pending_next
        self._wrote = True
        with self._new_data:
            self._new_data.notify_all()
        if self._on_commit is not None:
            self._on_commit(count, secs)

    def consumer(self, group: str) -> LogConsumer:
        return SqliteConsumer(self, group)

    def end_offset(self) -> int:
        """The next offset, as the file has it (appends of other processes included)."""
        with self._reader_lock, translated("reading the event log failed", _log_error):
            row = self._reader.execute(END_OFFSET).fetchone()
        self._next_offset = max(self._next_offset, int(row[0]))
        return self._next_offset

    def wait_for_data(self, timeout_secs: float) -> None:
        with self._new_data:
            self._new_data.wait(timeout_secs)

    def lag(self, positions: Mapping[int, int]) -> LogLag:
        position = positions.get(PARTITION, 0)
        events = max(0, self.end_offset() - position)
        if events == 0:
            return LogLag(0, 0.0)
        with self._reader_lock, translated("reading the event log failed", _log_error):
            at = logged_at(self._reader, position)
        seconds = 0.0 if at is None else max(0.0, (self.clock.now_us() - at) / 1e6)
        return LogLag(events, seconds)

    def status(self) -> LogStatus:
        error = self._writer.last_error
        return LogStatus(
            writable=error is None,
            detail=error or "ok",
            pending_events=self._writer.pending,
            end_offsets={PARTITION: self.end_offset()},
        )

    def stop_writes(self) -> None:
        """Commit what is queued and refuse new appends; reading goes on (for draining)."""
        self._writer.close()

    def close(self) -> None:
        self.stop_writes()
        if self._wrote:  # a reader-only process must not wait on the writers' checkpoint
            with contextlib.suppress(sqlite3.Error):  # the WAL is replayed on the next open
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self._conn.close()
        self._reader.close()


class SqliteConsumer(LogConsumer):
    def __init__(self, log: SqliteLog, group: str) -> None:
        self._log = log
        self._group = group
        with translated(f"cannot open the event log at {log.path}", _log_error):
            self._conn = connect(log.path, log.synchronous)
        self._frames = FrameReader()
        committed = self.committed()
        self._position = committed.get(PARTITION, 0)

    def poll(self, max_records: int, timeout_secs: float) -> list[LogEntry]:
        deadline = time.monotonic() + timeout_secs
        while True:
            with translated(f"reading the event log for {self._group} failed", _log_error):
                entries = self._frames.read(self._conn, self._position, max_records)
            if entries:
                self._position = entries[-1].offset + 1
                return entries
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            # Woken by in-process commits; the short cap covers writers in other processes.
            self._log.wait_for_data(min(remaining, self._log.other_writers_poll_secs))

    def commit(self, positions: Mapping[int, int], *, wait: bool = True) -> None:
        what = f"committing the offsets of {self._group} failed"
        with translated(what, _log_error), self._conn:
            self._conn.execute("BEGIN IMMEDIATE")
            for partition, next_offset in positions.items():
                self._conn.execute(
                    "INSERT INTO consumer_offsets VALUES (?, ?, ?)"
                    " ON CONFLICT (grp, partition)"
                    " DO UPDATE SET next_offset = excluded.next_offset",
                    (self._group, partition, next_offset),
                )

    def committed(self) -> dict[int, int]:
        with translated(f"reading the offsets of {self._group} failed", _log_error):
            rows = self._conn.execute(
                "SELECT partition, next_offset FROM consumer_offsets WHERE grp = ?",
                (self._group,),
            ).fetchall()
        return {int(p): int(o) for p, o in rows}

    def seek(self, positions: Mapping[int, int]) -> None:
        if PARTITION in positions:
            self._position = positions[PARTITION]

    def lag(self) -> LogLag:
        return self._log.lag({PARTITION: self._position})

    def close(self) -> None:
        self._conn.close()
