"""Dead letters and in-flight markers in SQLite: the home when ``hot.kind = "sqlite"``.

One file (``DATA_DIR/deliver/deadletters.db``) shared by the runners, the
admin API and the ``convtrack dlq`` commands (other processes: WAL lets them
read and write beside the server). Semantics: store/deadletters/base.py.
SQLite's errors leave as a store's: ``StoreUnavailable`` (busy, locked, full...)
or ``StoreError``.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from convtrack.deliver.base import Forwarded
from convtrack.deliver.payload import decode_payload, encode_payload
from convtrack.errors import StoreError
from convtrack.sqlitekit import connect, translated
from convtrack.store.deadletters.base import (
    DEAD_LETTERED,
    REPLAY_LEASE_SECS,
    SETTLED,
    DeadLetter,
    DeadLetterStore,
    Failure,
)

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
CREATE TABLE IF NOT EXISTS replay_claims (
    id INTEGER PRIMARY KEY,
    destination TEXT NOT NULL,
    until_us INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS in_flight (
    destination TEXT NOT NULL,
    source_partition INTEGER NOT NULL,
    source_offset INTEGER NOT NULL,
    event_id TEXT NOT NULL,
    payload TEXT NOT NULL,
    resolved INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (destination, source_partition, source_offset)
);
"""


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
            payload=decode_payload(row[5]),
        ),
        last_status=row[6],
        last_answer=row[7],
        attempts=row[8],
        first_attempt_at_us=row[9],
        last_attempt_at_us=row[10],
        replay=bool(row[11]),
    )  # fmt: skip


_INSERT = (
    "INSERT INTO dead_letters (destination, event_id, source_partition, source_offset, payload, "
    "last_status, last_answer, attempts, first_attempt_at_us, last_attempt_at_us) "
    "VALUES (?,?,?,?,?,?,?,?,?,?)"
)


def _values(destination: str, event: Forwarded, failure: Failure) -> tuple[Any, ...]:
    return (
        destination, event.event_id, event.source_partition, event.source_offset,
        encode_payload(event.payload), failure.last_status, failure.last_answer, failure.attempts,
        failure.first_attempt_at_us, failure.last_attempt_at_us,
    )  # fmt: skip


def _where(destination: str | None) -> tuple[str, tuple[Any, ...]]:
    return ("WHERE destination = ?", (destination,)) if destination is not None else ("", ())


class SqliteDeadLetterStore(DeadLetterStore):
    """Every write is its own transaction (BEGIN IMMEDIATE: one writer across processes)."""

    def __init__(self, path: Path) -> None:
        try:
            self._conn = connect(path, synchronous="full")
            self._conn.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the dead letters at {path}: {exc}") from exc
        self._lock = threading.Lock()

    @contextmanager
    def _guarded(self) -> Iterator[None]:
        """The connection to itself, its ``sqlite3.Error`` translated."""
        with self._lock, translated("dead letters (SQLite) failed"):
            yield

    def add_rows(
        self,
        destination: str,
        rows: Sequence[tuple[Forwarded, Failure]],
        *,
        cap: int | None = None,
        in_flight: bool = False,
    ) -> int:
        with self._guarded(), self._transaction():
            self._conn.executemany(_INSERT, [_values(destination, e, f) for e, f in rows])
            if in_flight:
                self._set_in_flight(destination, [e for e, _ in rows], DEAD_LETTERED)
            return self._drop_past_cap(destination, cap)

    def _drop_past_cap(self, destination: str, cap: int | None) -> int:
        if cap is None:
            return 0
        (count,) = self._conn.execute(
            "SELECT count(*) FROM dead_letters WHERE destination = ?", (destination,)
        ).fetchone()
        excess = int(count) - cap
        if excess <= 0:
            return 0
        self._conn.execute(
            "DELETE FROM dead_letters WHERE id IN (SELECT id FROM dead_letters "
            "WHERE destination = ? ORDER BY id LIMIT ?)",
            (destination, excess),
        )
        return excess

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    def _write_many(self, sql: str, rows: Sequence[tuple[Any, ...]]) -> None:
        """One statement over many rows, in one transaction."""
        with self._guarded(), self._transaction():
            self._conn.executemany(sql, rows)

    def total(self, destination: str | None = None) -> int:
        where, args = _where(destination)
        with self._guarded():
            (count,) = self._conn.execute(
                f"SELECT count(*) FROM dead_letters {where}", args
            ).fetchone()
        return int(count)

    def items(self, destination: str | None = None, limit: int = 100) -> list[DeadLetter]:
        where, args = _where(destination)
        with self._guarded():
            rows = self._conn.execute(
                f"SELECT {_COLUMNS} FROM dead_letters {where} ORDER BY id LIMIT ?", (*args, limit)
            ).fetchall()
        return [_row(row) for row in rows]

    def mark_replay(self, destination: str | None = None) -> int:
        where, args = _where(destination)
        with self._guarded():
            cursor = self._conn.execute(f"UPDATE dead_letters SET replay = 1 {where}", args)
        return cursor.rowcount

    def replay_batch(
        self, destination: str, limit: int, now_us: int, lease_secs: float = REPLAY_LEASE_SECS
    ) -> list[DeadLetter]:
        conn = self._conn
        with self._guarded(), self._transaction():
            lapsed = "SELECT id FROM replay_claims WHERE destination = ? AND until_us <= ?"
            conn.execute(
                f"UPDATE dead_letters SET replay = 1 WHERE id IN ({lapsed})", (destination, now_us)
            )
            conn.execute(
                "DELETE FROM replay_claims WHERE destination = ? AND until_us <= ?",
                (destination, now_us),
            )
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM dead_letters WHERE destination = ? AND replay = 1 "
                "ORDER BY id LIMIT ?",
                (destination, limit),
            ).fetchall()
            ids = [(row[0],) for row in rows]
            conn.executemany("UPDATE dead_letters SET replay = 0 WHERE id = ?", ids)
            until = now_us + int(lease_secs * 1_000_000)
            conn.executemany(
                "INSERT OR REPLACE INTO replay_claims VALUES (?, ?, ?)",
                [(i, destination, until) for (i,) in ids],
            )
        return [_row(row) for row in rows]  # as taken: queued

    def _settle(self, sql: str, rows: Sequence[tuple[Any, ...]], ids: Sequence[int]) -> None:
        """One statement over many rows, and their claims ended, in one transaction."""
        with self._guarded(), self._transaction():
            self._conn.executemany(sql, rows)
            self._conn.executemany("DELETE FROM replay_claims WHERE id = ?", [(i,) for i in ids])

    def remove(self, ids: Sequence[int]) -> None:
        self._settle("DELETE FROM dead_letters WHERE id = ?", [(i,) for i in ids], ids)

    def failed_again(self, ids: Sequence[int], failure: Failure) -> None:
        self._settle(
            "UPDATE dead_letters SET replay = 0, last_status = ?, last_answer = ?, "
            "attempts = attempts + ?, last_attempt_at_us = ? WHERE id = ?",
            [(failure.last_status, failure.last_answer, failure.attempts,
              failure.last_attempt_at_us, i) for i in ids],
            ids,
        )  # fmt: skip

    def claim(self, ids: Sequence[int], note: str) -> None:
        self._settle(
            "UPDATE dead_letters SET replay = 0, last_answer = ? WHERE id = ?",
            [(note, i) for i in ids],
            ids,
        )

    def unclaim(self, rows: Sequence[DeadLetter]) -> None:
        self._settle(
            "UPDATE dead_letters SET replay = 1, last_answer = ? WHERE id = ?",
            [(row.last_answer, row.id) for row in rows],
            [row.id for row in rows],
        )

    # -- in-flight markers (see deliver.inflight) ---------------------------------

    def mark_in_flight(self, destination: str, events: Sequence[Forwarded]) -> None:
        self._write_many(
            "INSERT OR REPLACE INTO in_flight (destination, source_partition, source_offset, "
            "event_id, payload, resolved) VALUES (?,?,?,?,?,0)",
            [(destination, e.source_partition, e.source_offset, e.event_id,
              encode_payload(e.payload)) for e in events],
        )  # fmt: skip

    def in_flight(self, destination: str) -> list[tuple[Forwarded, bool]]:
        with self._guarded():
            rows = self._conn.execute(
                "SELECT event_id, source_partition, source_offset, payload, resolved "
                "FROM in_flight WHERE destination = ? ORDER BY source_partition, source_offset",
                (destination,),
            ).fetchall()
        return [
            (Forwarded(event_id=r[0], source_partition=r[1], source_offset=r[2],
                       payload=decode_payload(r[3])), bool(r[4]))
            for r in rows
        ]  # fmt: skip

    def settle_in_flight(self, destination: str, events: Sequence[Forwarded]) -> None:
        with self._guarded(), self._transaction():
            self._set_in_flight(destination, events, SETTLED)

    def _set_in_flight(self, destination: str, events: Sequence[Forwarded], state: int) -> None:
        self._conn.executemany(
            "UPDATE in_flight SET resolved = ? WHERE destination = ? "
            "AND source_partition = ? AND source_offset = ?",
            [(state, destination, e.source_partition, e.source_offset) for e in events],
        )

    def clear_in_flight(self, destination: str, committed: Mapping[int, int]) -> None:
        self._write_many(
            "DELETE FROM in_flight WHERE destination = ? AND source_partition = ? "
            "AND source_offset < ?",
            [(destination, partition, offset) for partition, offset in committed.items()],
        )

    def purge(self, destination: str | None = None) -> int:
        where, args = _where(destination)
        with self._guarded(), self._transaction():
            cursor = self._conn.execute(f"DELETE FROM dead_letters {where}", args)
            self._conn.execute(f"DELETE FROM replay_claims {where}", args)
        return cursor.rowcount

    def close(self) -> None:
        with self._lock:
            self._conn.close()
