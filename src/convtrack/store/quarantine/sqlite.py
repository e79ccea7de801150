"""The quarantine in its own SQLite database (the embedded default)."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from convtrack.errors import StoreError
from convtrack.sqlitekit import connect
from convtrack.store.quarantine.base import (
    CLAIM_LEASE_SECS,
    Quarantined,
    QuarantineRow,
    QuarantineStore,
    with_note,
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS quarantine (
    id INTEGER PRIMARY KEY,
    stage TEXT NOT NULL,
    scope TEXT NOT NULL,
    log TEXT NOT NULL,
    part INTEGER NOT NULL,
    off INTEGER NOT NULL,
    key TEXT NOT NULL,
    payload BLOB NOT NULL,
    event_id TEXT,
    error TEXT NOT NULL,
    at_us INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 1,
    queued INTEGER NOT NULL DEFAULT 0,
    lease_until_us INTEGER,
    note TEXT,
    UNIQUE (stage, scope, log, part, off)
);
CREATE INDEX IF NOT EXISTS quarantine_queued ON quarantine (queued, stage, scope, id);
"""
_COLUMNS = (
    "id, stage, scope, log, part, off, key, payload, event_id, error, at_us, attempts, queued, note"
)


class SqliteQuarantineStore(QuarantineStore):
    def __init__(self, path: Path) -> None:
        try:
            # FULL: a row is what lets a stage move past the event (nothing may be lost).
            self._conn = connect(path, "full")
            self._conn.executescript(_SCHEMA)
            _add_note_column(self._conn)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the quarantine at {path}: {exc}") from exc
        self._lock = threading.Lock()  # one connection, used by the stages and the API

    @contextmanager
    def _tx(self, action: str, write: bool = True) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                if write:
                    with self._conn:
                        self._conn.execute("BEGIN IMMEDIATE")
                        yield self._conn
                else:
                    yield self._conn
            except sqlite3.Error as exc:
                raise StoreError(f"quarantine {action} failed: {exc}") from exc

    def add(self, events: Sequence[Quarantined]) -> int:
        if not events:
            return 0
        with self._tx("add") as conn:
            before = conn.total_changes
            conn.executemany(
                "INSERT OR IGNORE INTO quarantine (stage, scope, log, part, off, key, payload,"
                " event_id, error, at_us) VALUES (?,?,?,?,?,?,?,?,?,?)",
                [(e.stage, e.scope, e.log, e.partition, e.offset, e.key, e.payload, e.event_id,
                  e.error, e.at_us) for e in events],
            )  # fmt: skip
            return conn.total_changes - before

    def total(self, stage: str | None = None) -> int:
        with self._tx("read", write=False) as conn:
            if stage is None:
                (n,) = conn.execute("SELECT COUNT(*) FROM quarantine").fetchone()
            else:
                (n,) = conn.execute(
                    "SELECT COUNT(*) FROM quarantine WHERE stage = ?", (stage,)
                ).fetchone()
        return int(n)

    def items(
        self, stage: str | None = None, limit: int = 100, after_id: int = 0
    ) -> list[QuarantineRow]:
        where = "id > ?" if stage is None else "id > ? AND stage = ?"
        args: list[object] = [after_id] if stage is None else [after_id, stage]
        with self._tx("read", write=False) as conn:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM quarantine WHERE {where} ORDER BY id LIMIT ?",
                [*args, limit],
            ).fetchall()
        return [_row(r) for r in rows]

    def mark_replay(self, stage: str | None = None) -> int:
        with self._tx("mark_replay") as conn:
            sql = (
                "UPDATE quarantine SET queued = 1, lease_until_us = NULL, note = NULL"
                " WHERE queued = 0"
            )
            if stage is None:
                cur = conn.execute(sql)
            else:
                cur = conn.execute(sql + " AND stage = ?", (stage,))
            return int(cur.rowcount)

    def claim(
        self,
        stages: Collection[str],
        scope: str,
        limit: int,
        now_us: int,
        lease_secs: float = CLAIM_LEASE_SECS,
    ) -> list[QuarantineRow]:
        if not stages:
            return []
        marks = ",".join("?" * len(stages))
        with self._tx("claim") as conn:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM quarantine WHERE queued = 1 AND stage IN ({marks})"
                " AND scope = ? AND (lease_until_us IS NULL OR lease_until_us <= ?)"
                " ORDER BY id LIMIT ?",
                [*stages, scope, now_us, limit],
            ).fetchall()
            conn.executemany(
                "UPDATE quarantine SET lease_until_us = ? WHERE id = ?",
                [(now_us + int(lease_secs * 1e6), r[0]) for r in rows],
            )
        return [_row(r) for r in rows]

    def remove(self, ids: Sequence[int]) -> None:
        if ids:
            with self._tx("remove") as conn:
                conn.executemany("DELETE FROM quarantine WHERE id = ?", [(i,) for i in ids])

    def settle_claims(self, ids: Sequence[int], note: str) -> list[int]:
        if not ids:
            return []
        marks = ",".join("?" * len(ids))
        with self._tx("settle_claims") as conn:
            settled = [r[0] for r in conn.execute(
                f"SELECT id FROM quarantine WHERE queued = 1 AND id IN ({marks}) ORDER BY id",
                list(ids),
            )]  # fmt: skip
            conn.executemany(
                "UPDATE quarantine SET queued = 0, lease_until_us = NULL, note = ? WHERE id = ?",
                [(note, i) for i in settled],
            )
        return settled

    def give_back(self, ids: Sequence[int]) -> None:
        if ids:
            with self._tx("give_back") as conn:
                conn.executemany(
                    "UPDATE quarantine SET queued = 1, lease_until_us = NULL, note = NULL"
                    " WHERE id = ?",
                    [(i,) for i in ids],
                )

    def failed_again(self, row_id: int, error: str, now_us: int) -> None:
        with self._tx("failed_again") as conn:
            conn.execute(
                "UPDATE quarantine SET queued = 0, lease_until_us = NULL, note = NULL, error = ?,"
                " at_us = ?, attempts = attempts + 1 WHERE id = ?",
                (error, now_us, row_id),
            )

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def _add_note_column(conn: sqlite3.Connection) -> None:
    """A quarantine made before settled claims had no note column."""
    columns = {r[1] for r in conn.execute("PRAGMA table_info(quarantine)")}
    if "note" not in columns:
        try:
            conn.execute("ALTER TABLE quarantine ADD COLUMN note TEXT")
        except sqlite3.OperationalError as exc:
            if "duplicate column" not in str(exc):  # another process added it first
                raise


def _row(r: tuple[Any, ...]) -> QuarantineRow:
    event = Quarantined(
        stage=r[1], scope=r[2], log=r[3], partition=r[4], offset=r[5], key=r[6],
        payload=bytes(r[7]), event_id=r[8], error=with_note(r[9], r[13]), at_us=r[10],
    )  # fmt: skip
    return QuarantineRow(id=r[0], event=event, attempts=r[11], replay=bool(r[12]))
