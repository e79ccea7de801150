"""Dead letters: deliveries that failed for good, with the destination's last answer.

One SQLite file (``DATA_DIR/deliver/deadletters.db``) shared by the runners,
the admin API and the ``convtrack dlq`` commands (another process: WAL lets
them read and write beside the server). Replaying marks rows; the runner of
that destination sends marked rows before new events and removes each row
once delivered. Each destination keeps at most a cap of rows: past it the
oldest are dropped (and counted by the caller).

The same file holds the in-flight markers of destinations that cannot
deduplicate (``deliver.inflight``): the events of a batch being sent, so that
a crash mid-send is noticed at the next start instead of sending them twice.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import msgspec

from convtrack.deliver.base import Forwarded
from convtrack.deliver.payload import rfc3339_ms
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


# in_flight.resolved: 0 the send's fate is unknown; else settled, not to be sent again.
DEAD_LETTERED = 1
SETTLED = 2  # delivered, or taken out of the batch unsent


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
            "first_attempt_at": rfc3339_ms(self.first_attempt_at_us),
            "last_attempt_at": rfc3339_ms(self.last_attempt_at_us),
            "replay_pending": self.replay,
        }


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


_INSERT = (
    "INSERT INTO dead_letters (destination, event_id, source_partition, source_offset, payload, "
    "last_status, last_answer, attempts, first_attempt_at_us, last_attempt_at_us) "
    "VALUES (?,?,?,?,?,?,?,?,?,?)"
)


def _values(destination: str, event: Forwarded, failure: Failure) -> tuple[Any, ...]:
    return (
        destination, event.event_id, event.source_partition, event.source_offset,
        json.dumps(event.payload), failure.last_status, failure.last_answer, failure.attempts,
        failure.first_attempt_at_us, failure.last_attempt_at_us,
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

    def add(
        self,
        destination: str,
        events: Sequence[Forwarded],
        failure: Failure,
        *,
        cap: int | None = None,
    ) -> int:
        """Dead-letter ``events`` with one failure; returns how many old rows the cap dropped."""
        return self.add_rows(destination, [(event, failure) for event in events], cap=cap)

    def add_rows(
        self,
        destination: str,
        rows: Sequence[tuple[Forwarded, Failure]],
        *,
        cap: int | None = None,
        in_flight: bool = False,
    ) -> int:
        """Dead-letter events each with its own failure, in one transaction; past ``cap``
        rows for the destination the oldest are deleted. Returns how many were deleted.
        ``in_flight``: also flag their in-flight markers dead-lettered, in the same
        transaction, so a crash before the commit does not dead-letter them twice."""
        with self._lock, self._transaction():
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
        with self._lock, self._transaction():
            self._conn.executemany(sql, rows)

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

    def claim(self, ids: Sequence[int], note: str) -> None:
        """Unmark rows about to be replayed, noting why a crash would leave them here
        (for destinations that cannot deduplicate: never replayed twice unasked)."""
        self._write_many(
            "UPDATE dead_letters SET replay = 0, last_answer = ? WHERE id = ?",
            [(note, i) for i in ids],
        )

    def unclaim(self, rows: Sequence[DeadLetter]) -> None:
        """Give claimed rows back as they were (the replay was held, not sent)."""
        self._write_many(
            "UPDATE dead_letters SET replay = 1, last_answer = ? WHERE id = ?",
            [(row.last_answer, row.id) for row in rows],
        )

    # -- in-flight markers (see deliver.inflight) ---------------------------------

    def mark_in_flight(self, destination: str, events: Sequence[Forwarded]) -> None:
        self._write_many(
            "INSERT OR REPLACE INTO in_flight (destination, source_partition, source_offset, "
            "event_id, payload, resolved) VALUES (?,?,?,?,?,0)",
            [(destination, e.source_partition, e.source_offset, e.event_id,
              json.dumps(e.payload)) for e in events],
        )  # fmt: skip

    def in_flight(self, destination: str) -> list[tuple[Forwarded, bool]]:
        """The markers left for ``destination``: each event and whether it was resolved."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT event_id, source_partition, source_offset, payload, resolved "
                "FROM in_flight WHERE destination = ? ORDER BY source_partition, source_offset",
                (destination,),
            ).fetchall()
        return [
            (Forwarded(event_id=r[0], source_partition=r[1], source_offset=r[2],
                       payload=json.loads(r[3])), bool(r[4]))
            for r in rows
        ]  # fmt: skip

    def resolve_in_flight(
        self, destination: str, events: Sequence[Forwarded], failure: Failure, cap: int | None
    ) -> int:
        """Dead-letter unresolved markers and flag them resolved, in one transaction (so a
        second crash neither loses nor doubles them). Returns rows dropped by the cap."""
        return self.add_rows(destination, [(e, failure) for e in events], cap=cap, in_flight=True)

    def settle_in_flight(self, destination: str, events: Sequence[Forwarded]) -> None:
        """Flag markers whose events were delivered (or skipped) before their offsets are
        committed: read again after a crash, they are passed over, neither resent nor
        dead-lettered."""
        with self._lock, self._transaction():
            self._set_in_flight(destination, events, SETTLED)

    def _set_in_flight(self, destination: str, events: Sequence[Forwarded], state: int) -> None:
        self._conn.executemany(
            "UPDATE in_flight SET resolved = ? WHERE destination = ? "
            "AND source_partition = ? AND source_offset = ?",
            [(state, destination, e.source_partition, e.source_offset) for e in events],
        )

    def clear_in_flight(self, destination: str, committed: Mapping[int, int]) -> None:
        """Forget the markers below the committed positions (their batch is settled)."""
        self._write_many(
            "DELETE FROM in_flight WHERE destination = ? AND source_partition = ? "
            "AND source_offset < ?",
            [(destination, partition, offset) for partition, offset in committed.items()],
        )

    def purge(self, destination: str | None = None) -> int:
        where, args = _where(destination)
        with self._lock:
            cursor = self._conn.execute(f"DELETE FROM dead_letters {where}", args)
        return cursor.rowcount

    def close(self) -> None:
        with self._lock:
            self._conn.close()
