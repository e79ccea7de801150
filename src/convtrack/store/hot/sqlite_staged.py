"""Keyed rows written per batch to a journal, and merged into their table in key order.

The dedup entries, sessions and touches of a batch have keys spread over the
whole table (event ids are random, users come back at any time), so writing
them in place dirties about one page per row: at a million remembered ids a
2,000-event batch rewrote ~8 MB of pages into the WAL, and its commit took
longer than everything else the processor did. Instead each batch appends its
rows as one blob to ``staged_rows`` (a few sequential pages), in the batch's
transaction, and the store keeps the staged rows in memory, where they answer
first.

Merging them into their tables goes in cycles. Once ``CYCLE_ROWS`` rows are
staged, a cycle takes their keys in sorted order, and every batch after that
merges the next stretch of them (at least twice the rows the batch staged, so
a cycle ends): the table then receives its rows in key order, a page about
once per cycle however many of its rows changed, and no batch waits for a
whole merge. A merged key leaves memory once its batch commits; when the
cycle's last stretch is merged, the journal rows it covered are deleted, in
the same transaction.

Expiry drops the staged rows that ended from memory and journals a marker,
so that reading the journal again (a restart) drops them too. Everything stays
durable and atomic with the batch that wrote it; the store has one writer (the
processor), so its memory and the files agree.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import msgspec

from convtrack.store.hot.sqlite_rows import rows_where_in

STAGED_SCHEMA = """
CREATE TABLE IF NOT EXISTS staged_rows (
    seq INTEGER PRIMARY KEY, tbl TEXT NOT NULL, n INTEGER NOT NULL, body BLOB NOT NULL
);
"""
# Staged rows of one table that start a merge cycle: the more, the fewer rows per page
# a cycle writes; the memory they take is ~150 B each.
CYCLE_ROWS = 30_000
MIN_STRETCH = 2_000  # rows a batch merges at least while a cycle runs

Row = tuple[Any, ...]  # the table's columns, key first

Value = TypeVar("Value")


def split_found(
    held: Mapping[str, Value], keys: Iterable[str]
) -> tuple[dict[str, Value], list[str]]:
    """The values ``held`` has among ``keys`` (once each), and the keys it lacks."""
    found: dict[str, Value] = {}
    missing: list[str] = []
    for key in set(keys):
        value = held.get(key)
        if value is None:
            missing.append(key)
        else:
            found[key] = value
    return found, missing


_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(list[tuple[Any, ...]]).decode


@dataclass(frozen=True, slots=True)
class Stretch:
    rows: list[Row]  # the rows merged
    keys: int  # how many of the cycle's keys it covered


@dataclass(slots=True)
class _Cycle:
    keys: list[str]  # the staged keys when it started, sorted
    through_seq: int  # the journal rows it covers (seq up to this)
    done: int = 0  # keys merged so far


class StagedTable:
    """One keyed table: its staged rows in memory, the journal, and the merge cycles."""

    def __init__(
        self,
        table: str,
        columns: Sequence[str],
        upsert: str,
        *,
        cycle_rows: int = CYCLE_ROWS,
        min_stretch: int = MIN_STRETCH,
    ) -> None:
        """``upsert``: the ``ON CONFLICT`` clause that updates a stored row; the table's
        ``expires_at_us`` column says when a row ends."""
        self.table = table
        self._marker = f"{table}:expired"
        self._columns = ", ".join(columns)
        self._key = columns[0]
        self._expires = list(columns).index("expires_at_us")
        self._insert = f"INSERT INTO {table} VALUES ({', '.join('?' * len(columns))}) {upsert}"
        self._cycle_rows = cycle_rows
        self._min_stretch = min_stretch
        self._pending: dict[str, Row] = {}
        self._stored: set[str] = set()  # staged keys that have a row in the table too
        self._read_stored: set[str] = set()  # keys the last ``rows`` found in the table
        self._seq = 0  # the last journal row this memory reflects
        self._cycle: _Cycle | None = None

    def __len__(self) -> int:
        return len(self._pending)

    @property
    def unstored(self) -> int:
        """Staged keys the table does not hold: what the table's count lacks."""
        return len(self._pending) - len(self._stored)

    def load(self, conn: sqlite3.Connection) -> None:
        """What the journal holds (staged by an earlier run, not merged yet), in order."""
        self._pending.clear()
        self._cycle = None
        self._seq = 0
        rows = conn.execute(
            "SELECT seq, tbl, n, body FROM staged_rows WHERE tbl IN (?, ?) ORDER BY seq",
            (self.table, self._marker),
        )
        for seq, tbl, n, body in rows:
            if tbl == self._marker:
                self._drop_ended(n)
            else:
                self._pending.update((row[0], row) for row in _decode(body))
            self._seq = seq
        select = f"SELECT {self._key} FROM {self.table}"
        self._stored = {
            key for (key,) in rows_where_in(conn, select, self._key, list(self._pending))
        }

    def rows(self, conn: sqlite3.Connection, keys: Sequence[str]) -> dict[str, Row]:
        """The current rows of ``keys``: staged ones first, then the table's."""
        found, missing = split_found(self._pending, keys)
        select = f"SELECT {self._columns} FROM {self.table}"
        stored = {row[0]: row for row in rows_where_in(conn, select, self._key, missing)}
        self._read_stored = set(stored)
        found.update(stored)
        return found

    # -- in the caller's transaction; the matching "…ed" call once it commits ------------

    def stage(self, conn: sqlite3.Connection, rows: Sequence[Row]) -> int:
        """Journal ``rows``; the journal row's seq (0: nothing to stage)."""
        if not rows:
            return 0
        cursor = conn.execute(
            "INSERT INTO staged_rows (tbl, n, body) VALUES (?, ?, ?)",
            (self.table, len(rows), _encode(rows)),
        )
        return int(cursor.lastrowid or 0)

    def staged(self, rows: Sequence[Row], seq: int) -> None:
        """``rows`` committed; the keys the transaction's ``rows`` call found in the table
        are in both places now."""
        for row in rows:
            key = row[0]
            if key not in self._pending and key in self._read_stored:
                self._stored.add(key)
            self._pending[key] = row
        self._seq = max(self._seq, seq)

    def merge_stretch(self, conn: sqlite3.Connection, at_least: int) -> Stretch:
        """Merge the running cycle's next stretch of keys, at least ``at_least`` (a cycle
        starts once enough is staged); ``merged`` with it once the transaction commits."""
        cycle = self._cycle
        if cycle is None:
            if len(self._pending) < self._cycle_rows:
                return Stretch([], 0)
            cycle = self._cycle = _Cycle(sorted(self._pending), self._seq)
        keys = cycle.keys[cycle.done : cycle.done + max(self._min_stretch, at_least)]
        rows = [self._pending[k] for k in keys if k in self._pending]
        if rows:
            conn.executemany(self._insert, rows)
        if cycle.done + len(keys) >= len(cycle.keys):
            conn.execute(
                "DELETE FROM staged_rows WHERE tbl IN (?, ?) AND seq <= ?",
                (self.table, self._marker, cycle.through_seq),
            )
        return Stretch(rows, len(keys))

    def merged(self, stretch: Stretch) -> None:
        """The stretch committed: its rows answer from the table now."""
        cycle = self._cycle
        if cycle is None or not stretch.keys:
            return
        for row in stretch.rows:
            if self._pending.get(row[0]) is row:
                del self._pending[row[0]]
                self._stored.discard(row[0])
            else:  # staged again since: in both places
                self._stored.add(row[0])
        cycle.done += stretch.keys
        if cycle.done >= len(cycle.keys):
            self._cycle = None

    def expire(self, conn: sqlite3.Connection, watermark_us: int) -> int:
        """Journal that rows ending by ``watermark_us`` are gone; how many staged ones
        there are (``ended`` drops them once the transaction commits).

        Journaled even when none is staged: the journal still holds the rows a
        running cycle merged, and the table's copies are deleted now, so reading the
        journal again must not bring them back."""
        conn.execute(
            "INSERT INTO staged_rows (tbl, n, body) VALUES (?, ?, x'')",
            (self._marker, watermark_us),
        )
        return sum(1 for row in self._pending.values() if row[self._expires] <= watermark_us)

    def ended(self, watermark_us: int, deleted: Sequence[str] = ()) -> None:
        """The expiry committed; ``deleted``: the keys it deleted from the table."""
        self._drop_ended(watermark_us)
        self._stored.difference_update(deleted)

    def _drop_ended(self, watermark_us: int) -> None:
        gone = [k for k, row in self._pending.items() if row[self._expires] <= watermark_us]
        for key in gone:
            del self._pending[key]
            self._stored.discard(key)
