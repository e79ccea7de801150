"""Keyed rows written per batch to a journal, and merged into their table in key order.

The dedup entries, sessions and touches of a batch have keys spread over the
whole table (event ids are random, users come back at any time), so writing
them in place dirties about one page per row: at a million remembered ids a
2,000-event batch rewrote ~8 MB of pages into the WAL, and its commit took
longer than everything else the processor did. Instead each batch appends its
rows as one blob to ``staged_rows`` (a few sequential pages), in the batch's
transaction; the store keeps the staged rows in memory, where they answer
first, and now and then (``MERGE_PENDING_ROWS``, or before expiry) merges
them into their tables in key order in one transaction, so a page receives
all of its rows at once and a key written by many batches is written once.

Everything stays durable and atomic with the batch: the journal row commits
with the counters and positions, a merge inserts and deletes the journal in
one transaction, and opening the store loads what the journal still holds.
The store has one writer (the processor), so its memory and the files agree.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

import msgspec

from convtrack.store.hot.sqlite_rows import chunks

STAGED_SCHEMA = """
CREATE TABLE IF NOT EXISTS staged_rows (
    seq INTEGER PRIMARY KEY, tbl TEXT NOT NULL, n INTEGER NOT NULL, body BLOB NOT NULL
);
"""
# Merged once this many rows are staged (all tables together): ~15 MB of memory, and a
# merge that takes a fraction of a second even into tables of millions of rows.
MERGE_PENDING_ROWS = 100_000

Row = tuple[Any, ...]  # the table's columns, key first

_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(list[tuple[Any, ...]]).decode


class StagedTable:
    """One keyed table: its staged rows in memory, the journal, and the merge."""

    def __init__(self, table: str, columns: Sequence[str], upsert: str) -> None:
        """``upsert``: the ``ON CONFLICT`` clause that updates a stored row."""
        self.table = table
        self._columns = ", ".join(columns)
        self._key = columns[0]
        self._insert = f"INSERT INTO {table} VALUES ({', '.join('?' * len(columns))}) {upsert}"
        self._pending: dict[str, Row] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def load(self, conn: sqlite3.Connection) -> None:
        """What the journal holds (staged by an earlier run, not merged yet), in order."""
        self._pending.clear()
        rows = conn.execute(
            "SELECT body FROM staged_rows WHERE tbl = ? ORDER BY seq", (self.table,)
        )
        for (body,) in rows:
            self._pending.update((row[0], row) for row in _decode(body))

    def rows(self, conn: sqlite3.Connection, keys: Sequence[str]) -> dict[str, Row]:
        """The current rows of ``keys``: staged ones first, then the table's."""
        found: dict[str, Row] = {}
        missing: list[str] = []
        for key in set(keys):
            row = self._pending.get(key)
            if row is None:
                missing.append(key)
            else:
                found[key] = row
        for chunk in chunks(missing):
            marks = ",".join("?" * len(chunk))
            query = f"SELECT {self._columns} FROM {self.table} WHERE {self._key} IN ({marks})"
            found.update((row[0], row) for row in conn.execute(query, chunk))
        return found

    def stage(self, conn: sqlite3.Connection, rows: Sequence[Row], new: int) -> None:
        """Journal ``rows`` in the caller's transaction; ``new``: how many of their keys
        neither the table nor the journal holds yet (what ``remembered`` adds up)."""
        if rows:
            conn.execute(
                "INSERT INTO staged_rows (tbl, n, body) VALUES (?, ?, ?)",
                (self.table, new, _encode(rows)),
            )

    def staged(self, rows: Sequence[Row]) -> None:
        """The transaction that staged ``rows`` committed: they answer from now on."""
        self._pending.update((row[0], row) for row in rows)

    def merge(self, conn: sqlite3.Connection) -> None:
        """Write the staged rows into the table, in key order, and empty the journal, in
        the caller's transaction (``merged`` once it commits)."""
        if self._pending:
            conn.executemany(self._insert, sorted(self._pending.values()))
        conn.execute("DELETE FROM staged_rows WHERE tbl = ?", (self.table,))

    def merged(self) -> None:
        self._pending.clear()
