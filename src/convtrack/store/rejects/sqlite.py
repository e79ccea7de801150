"""Rejects in their own SQLite database, group-committed, capped by row count.

Its failures are a store's (``convtrack.errors``): a write that cannot be made now
raises ``StoreUnavailable``, a failed read ``StoreError`` (or ``StoreUnavailable``).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from convtrack.errors import StoreError, StoreUnavailable
from convtrack.model.timeparse import format_us
from convtrack.sqlitekit import GroupCommitter, connect, translated
from convtrack.store.rejects.base import IngestReject, RejectPage, RejectStore, StoredReject

_SCHEMA = """
CREATE TABLE IF NOT EXISTS rejects (
    id INTEGER PRIMARY KEY,
    received_at_us INTEGER NOT NULL,
    route TEXT NOT NULL,
    status INTEGER NOT NULL,
    codes TEXT NOT NULL,
    body TEXT NOT NULL,
    source TEXT,
    key_role TEXT,
    key_id TEXT,
    event_id TEXT,
    idx INTEGER
);
CREATE TABLE IF NOT EXISTS reject_codes (
    code TEXT NOT NULL,
    reject_id INTEGER NOT NULL,
    PRIMARY KEY (code, reject_id)
) WITHOUT ROWID;
"""
_COLUMNS = "id, received_at_us, route, status, codes, body, source, key_role, key_id, event_id, idx"


class SqliteRejectStore(RejectStore):
    def __init__(
        self,
        path: Path,
        *,
        max_rows: int,
        max_body_bytes: int,
        on_drop: Callable[[int], None] | None = None,
    ) -> None:
        self._max_rows = max_rows
        self._max_body_bytes = max_body_bytes
        self._on_drop = on_drop
        self._dropped = 0
        try:
            conn = connect(path, "normal")
            conn.executescript(_SCHEMA)
            reader = connect(path, "normal")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the rejects store at {path}: {exc}") from exc
        self._conn = conn
        self._reader = reader
        self._read_lock = threading.Lock()  # the API and the lake's copier both read
        self._writer: GroupCommitter[list[IngestReject], None] = GroupCommitter(
            "rejects", conn, self._write, max_pending=50_000, max_batch=5_000,
            unavailable=_unavailable,
        )  # fmt: skip

    def _write(self, conn: sqlite3.Connection, batches: Sequence[list[IngestReject]]) -> list[None]:
        for batch in batches:
            for r in batch:
                body = truncated(r.body, self._max_body_bytes)
                cur = conn.execute(
                    "INSERT INTO rejects (received_at_us, route, status, codes, body, source,"
                    " key_role, key_id, event_id, idx) VALUES (?,?,?,?,?,?,?,?,?,?)",
                    (r.received_at_us, r.route, r.status, ",".join(r.codes), body, r.source,
                     r.key_role, r.key_id, r.event_id, r.index),
                )  # fmt: skip
                conn.executemany(
                    "INSERT OR IGNORE INTO reject_codes VALUES (?, ?)",
                    [(code, cur.lastrowid) for code in set(r.codes)],
                )
        (newest,) = conn.execute("SELECT COALESCE(MAX(id), 0) FROM rejects").fetchone()
        cutoff = newest - self._max_rows
        if cutoff > 0:
            gone = conn.execute("DELETE FROM rejects WHERE id <= ?", (cutoff,)).rowcount
            conn.execute("DELETE FROM reject_codes WHERE reject_id <= ?", (cutoff,))
            if gone > 0:
                self._dropped += gone
                if self._on_drop is not None:
                    self._on_drop(gone)
        return [None] * len(batches)

    async def add(self, rejects: list[IngestReject]) -> None:
        if rejects:
            await self._writer.submit(rejects, len(rejects))

    def page(self, *, code: str | None, limit: int, before_id: int | None) -> RejectPage:
        with self._read_lock, translated("reading the rejects store failed"):
            return self._page(code, limit, before_id)

    def _page(self, code: str | None, limit: int, before_id: int | None) -> RejectPage:
        cursor = before_id if before_id is not None else 2**62
        if code is None:
            (total,) = self._reader.execute("SELECT COUNT(*) FROM rejects").fetchone()
            rows = self._reader.execute(
                f"SELECT {_COLUMNS} FROM rejects WHERE id < ? ORDER BY id DESC LIMIT ?",
                (cursor, limit),
            ).fetchall()
        else:
            (total,) = self._reader.execute(
                "SELECT COUNT(*) FROM reject_codes WHERE code = ?", (code,)
            ).fetchone()
            rows = self._reader.execute(
                f"SELECT {', '.join('r.' + c.strip() for c in _COLUMNS.split(','))}"
                " FROM reject_codes c JOIN rejects r ON r.id = c.reject_id"
                " WHERE c.code = ? AND c.reject_id < ? ORDER BY c.reject_id DESC LIMIT ?",
                (code, cursor, limit),
            ).fetchall()
        items = [_stored(row) for row in rows]
        next_cursor = items[-1].id if len(items) == limit else None
        return RejectPage(total=total, items=items, next_cursor=next_cursor)

    def since(self, after_id: int, limit: int) -> list[StoredReject]:
        with self._read_lock, translated("reading the rejects store failed"):
            rows = self._reader.execute(
                f"SELECT {_COLUMNS} FROM rejects WHERE id > ? ORDER BY id LIMIT ?",
                (after_id, limit),
            ).fetchall()
        return [_stored(row) for row in rows]

    @property
    def dropped(self) -> int:
        return self._dropped

    def close(self) -> None:
        self._writer.close()
        self._reader.close()
        self._conn.close()


def _unavailable(reason: str, retry_after_secs: int) -> StoreUnavailable:
    return StoreUnavailable(f"the rejects store cannot write now: {reason}")


def truncated(body: str, max_bytes: int) -> str:
    """The body as kept: at most ``max_bytes`` (``rejects.max_body_bytes``) of UTF-8,
    marked when cut; a character the cut would split is left out whole."""
    if len(body) * 4 <= max_bytes:  # no UTF-8 character is longer than 4 bytes
        return body
    encoded = body.encode("utf-8", "surrogatepass")
    if len(encoded) <= max_bytes:
        return body
    return encoded[:max_bytes].decode("utf-8", "ignore") + "…[truncated]"


def _stored(row: tuple[Any, ...]) -> StoredReject:
    return StoredReject(
        id=row[0], received_at=format_us(row[1]), received_at_us=row[1], route=row[2],
        status=row[3], codes=row[4].split(",") if row[4] else [], body=row[5], source=row[6],
        key_role=row[7], key_id=row[8], event_id=row[9], index=row[10],
    )  # fmt: skip
