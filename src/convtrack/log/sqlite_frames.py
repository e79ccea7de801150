"""How the SQLite log keeps its entries: one row per group commit (a frame).

A frame holds every record of one commit, framed as one msgpack array of
``[key, payload]`` pairs, under the offset of its first record; the records'
offsets follow from their places in it, and they share the commit's
``logged_at_us``. One row per commit instead of one per record is what makes
an append cheap: SQLite's cost is per row (a B-tree insert and its page
writes), and a busy collector commits hundreds of events at once.

Logs written before frames existed hold one row per record in the ``log``
table; those rows are read as they are, and new frames start after them.
"""

from __future__ import annotations

import itertools
import sqlite3
from collections.abc import Iterable, Sequence

import msgspec

from convtrack.log.base import LogEntry, LogRecord

PARTITION = 0
SCHEMA = """
CREATE TABLE IF NOT EXISTS log (
    offset INTEGER PRIMARY KEY,
    key TEXT NOT NULL,
    logged_at_us INTEGER NOT NULL,
    payload BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS frames (
    first_offset INTEGER PRIMARY KEY,
    count INTEGER NOT NULL,
    logged_at_us INTEGER NOT NULL,
    body BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS consumer_offsets (
    grp TEXT NOT NULL,
    partition INTEGER NOT NULL,
    next_offset INTEGER NOT NULL,
    PRIMARY KEY (grp, partition)
);
"""
# The offset after the last entry: frames start after any rows of the older layout.
END_OFFSET = (
    "SELECT MAX(COALESCE((SELECT first_offset + count FROM frames"
    " ORDER BY first_offset DESC LIMIT 1), 0),"
    " COALESCE((SELECT MAX(offset) + 1 FROM log), 0))"
)
# The frames from the one holding ``?`` on, in order.
_FRAMES_FROM = (
    "SELECT first_offset, count, logged_at_us, body FROM frames WHERE first_offset >="
    " COALESCE((SELECT MAX(first_offset) FROM frames WHERE first_offset <= ?1), 0)"
    " AND first_offset + count > ?1 ORDER BY first_offset"
)


class _Framed(msgspec.Struct, array_like=True, frozen=True):
    key: str
    payload: bytes


_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(list[_Framed]).decode


def frame_body(batches: Iterable[Sequence[LogRecord]]) -> tuple[bytes, int]:
    """One commit's records as a frame body, and how many there are."""
    framed = [_Framed(r.key, r.payload) for r in itertools.chain.from_iterable(batches)]
    return _encode(framed), len(framed)


class FrameReader:
    """Reads entries from one connection, keeping the last frame it decoded: a poll
    for fewer entries than a frame holds reads the rest from memory next time."""

    def __init__(self) -> None:
        self._first = -1
        self._logged_at_us = 0
        self._records: list[_Framed] = []
        # Where the older layout's rows end: nothing appends to them any more, so it is
        # read once, and a poll past it does not ask the ``log`` table again.
        self._legacy_end: int | None = None

    def read(self, conn: sqlite3.Connection, position: int, limit: int) -> list[LogEntry]:
        """Up to ``limit`` entries from ``position`` on (fewer at the end of the log)."""
        if self._legacy_end is None:
            self._legacy_end = int(
                conn.execute("SELECT COALESCE(MAX(offset) + 1, 0) FROM log").fetchone()[0]
            )
        if position < self._legacy_end:
            legacy = conn.execute(
                "SELECT offset, key, payload, logged_at_us FROM log"
                " WHERE offset >= ? ORDER BY offset LIMIT ?",
                (position, limit),
            ).fetchall()
            return [LogEntry(PARTITION, r[0], r[1], r[2], r[3]) for r in legacy]
        entries: list[LogEntry] = []
        cursor: sqlite3.Cursor | None = None
        try:
            while len(entries) < limit:
                if not self._holds(position):
                    if cursor is None:
                        cursor = conn.execute(_FRAMES_FROM, (position,))
                    row = cursor.fetchone()
                    if row is None:
                        break  # the end of the log
                    self._keep(row)
                    position = max(position, self._first)  # entries as they come, as in ``log``
                start = position - self._first
                taken = self._records[start : start + limit - len(entries)]
                entries.extend(
                    LogEntry(PARTITION, position + i, r.key, r.payload, self._logged_at_us)
                    for i, r in enumerate(taken)
                )
                position += len(taken)
        finally:
            if cursor is not None:
                cursor.close()  # ends the statement, and with it the read snapshot
        return entries

    def _holds(self, position: int) -> bool:
        return self._first <= position < self._first + len(self._records)

    def _keep(self, row: tuple[int, int, int, bytes]) -> None:
        self._first, _count, self._logged_at_us, body = row
        self._records = _decode(body)


def logged_at(conn: sqlite3.Connection, position: int) -> int | None:
    """When the entry at ``position`` (or the first one after it) was logged."""
    row = conn.execute(
        "SELECT logged_at_us FROM log WHERE offset >= ? ORDER BY offset LIMIT 1", (position,)
    ).fetchone()
    if row is None:
        row = conn.execute(
            "SELECT logged_at_us FROM frames WHERE first_offset + count > ?"
            " ORDER BY first_offset LIMIT 1",
            (position,),
        ).fetchone()
    return None if row is None else int(row[0])


def last_entry(conn: sqlite3.Connection) -> LogEntry | None:
    row = conn.execute(
        "SELECT first_offset, count, logged_at_us, body FROM frames"
        " ORDER BY first_offset DESC LIMIT 1"
    ).fetchone()
    if row is not None:
        last = _decode(row[3])[-1]
        return LogEntry(PARTITION, row[0] + row[1] - 1, last.key, last.payload, row[2])
    legacy = conn.execute(
        "SELECT offset, key, payload, logged_at_us FROM log ORDER BY offset DESC LIMIT 1"
    ).fetchone()
    return None if legacy is None else LogEntry(PARTITION, *legacy)
