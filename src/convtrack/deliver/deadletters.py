"""Dead letters: deliveries that failed for good, with the destination's last answer.

One SQLite file (``DATA_DIR/deliver/deadletters.db``) shared by the runners,
the admin API and the ``convtrack dlq`` commands (another process: WAL lets
them read and write beside the server). Replaying marks rows; the runner of
that destination sends marked rows before new events and removes each row
once delivered.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec

from convtrack.deliver.base import Forwarded
from convtrack.sqlitekit import connect

_SCHEMA = """
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    destination TEXT NOT NULL,
    event_id TEXT NOT NULL,
    source_partition INTEGER NOT NULL,
    source_offset INTEGER NOT NULL,
    payload TEXT NOT NULL,
    last_status INTEGER,
    last_answer TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    first_attempt_at_us INTEGER NOT NULL,
    last_attempt_at_us INTEGER NOT NULL,
    replay INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS dead_letters_by_destination ON dead_letters (destination, replay, id);
"""


def store_path(data_dir: Path) -> Path:
    return data_dir / "deliver" / "deadletters.db"


class Failure(msgspec.Struct, frozen=True):
    """How a batch's delivery ended when it failed for good."""

    last_status: int | None
    last_answer: str
    attempts: int
    first_attempt_at_us: int
    last_attempt_at_us: int


class DeadLetter(msgspec.Struct, frozen=True):
    id: int
    destination: str
    event: Forwarded
    last_status: int | None
    last_answer: str
    attempts: int
    first_attempt_at_us: int
    last_attempt_at_us: int
    replay: bool

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "destination": self.destination,
            "event_id": self.event.event_id,
            "event": self.event.payload,
            "last_status": self.last_status,
            "last_answer": self.last_answer,
            "attempts": self.attempts,
            "first_attempt_at": _rfc3339(self.first_attempt_at_us),
            "last_attempt_at": _rfc3339(self.last_attempt_at_us),
            "replay_pending": self.replay,
        }


def _rfc3339(us: int) -> str:
    moment = datetime.fromtimestamp(us / 1e6, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


_COLUMNS = (
    "id, destination, event_id, source_partition, source_offset, payload, last_status, "
    "last_answer, attempts, first_attempt_at_us, last_attempt_at_us, replay"
)


def _row(row: tuple[Any, ...]) -> DeadLetter:
    return DeadLetter(
        id=row[0],
        destination=row[1],
        event=Forwarded(
            event_id=row[2], source_partition=row[3], source_offset=row[4],
            payload=json.loads(row[5]),
        ),
        last_status=row[6],
        last_answer=row[7],
        attempts=row[8],
        first_attempt_at_us=row[9],
        last_attempt_at_us=row[10],
        replay=bool(row[11]),
    )  # fmt: skip


def _where(destination: str | None) -> tuple[str, tuple[Any, ...]]:
    return ("WHERE destination = ?", (destination,)) if destination is not None else ("", ())


class DeadLetterStore:
    """Thread-safe; every write is its own transaction."""

    def __init__(self, path: Path) -> None:
        self._conn = connect(path, synchronous="full")
        self._lock = threading.Lock()
        with self._lock:
            self._conn.executescript(_SCHEMA)

    def add(self, destination: str, events: Sequence[Forwarded], failure: Failure) -> None:
        rows = [
            (destination, e.event_id, e.source_partition, e.source_offset, json.dumps(e.payload),
             failure.last_status, failure.last_answer, failure.attempts,
             failure.first_attempt_at_us, failure.last_attempt_at_us)
            for e in events
        ]  # fmt: skip
        self._write_many(
            "INSERT INTO dead_letters (destination, event_id, source_partition, "
            "source_offset, payload, last_status, last_answer, attempts, "
            "first_attempt_at_us, last_attempt_at_us) VALUES (?,?,?,?,?,?,?,?,?,?)",
            rows,
        )

    def _write_many(self, sql: str, rows: Sequence[tuple[Any, ...]]) -> None:
        """One statement over many rows, in one transaction."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._conn.executemany(sql, rows)
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def total(self, destination: str | None = None) -> int:
        where, args = _where(destination)
        with self._lock:
            (count,) = self._conn.execute(
                f"SELECT count(*) FROM dead_letters {where}", args
            ).fetchone()
        return int(count)

    def items(self, destination: str | None = None, limit: int = 100) -> list[DeadLetter]:
        where, args = _where(destination)
        with self._lock:
            rows = self._conn.execute(
                f"SELECT {_COLUMNS} FROM dead_letters {where} ORDER BY id LIMIT ?", (*args, limit)
            ).fetchall()
        return [_row(row) for row in rows]

    def mark_replay(self, destination: str | None = None) -> int:
        """Queue the dead letters (of one destination) for sending again; returns how many."""
        where, args = _where(destination)
        with self._lock:
            cursor = self._conn.execute(f"UPDATE dead_letters SET replay = 1 {where}", args)
        return cursor.rowcount

    def replay_batch(self, destination: str, limit: int) -> list[DeadLetter]:
        with self._lock:
            rows = self._conn.execute(
                f"SELECT {_COLUMNS} FROM dead_letters WHERE destination = ? AND replay = 1 "
                "ORDER BY id LIMIT ?",
                (destination, limit),
            ).fetchall()
        return [_row(row) for row in rows]

    def remove(self, ids: Sequence[int]) -> None:
        self._write_many("DELETE FROM dead_letters WHERE id = ?", [(i,) for i in ids])

    def failed_again(self, ids: Sequence[int], failure: Failure) -> None:
        """A replay failed for good: keep the rows, unmarked, with the new answer."""
        self._write_many(
            "UPDATE dead_letters SET replay = 0, last_status = ?, last_answer = ?, "
            "attempts = attempts + ?, last_attempt_at_us = ? WHERE id = ?",
            [(failure.last_status, failure.last_answer, failure.attempts,
              failure.last_attempt_at_us, i) for i in ids],
        )  # fmt: skip

    def purge(self, destination: str | None = None) -> int:
        where, args = _where(destination)
        with self._lock:
            cursor = self._conn.execute(f"DELETE FROM dead_letters {where}", args)
        return cursor.rowcount

    def close(self) -> None:
        with self._lock:
            self._conn.close()
