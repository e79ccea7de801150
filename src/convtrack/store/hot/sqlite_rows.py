"""The SQLite hot store's tables, and the row helpers its reads and writes share.

Besides the dedup entries (the latest counted copy of each id) and the
counters: ``earlier_copies`` holds the position of a counted copy whose dedup
row a later counted copy took over (their windows did not meet), so a replay
still says both were counted, until the later copy's window ends;
``replay_records`` holds, per applied batch and partition, the blobs that the
counted effects carried (base.py), until a batch starts past them.
"""

from __future__ import annotations

import sqlite3
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import msgspec

from convtrack.store.hot.base import saturate

SCHEMA = """
CREATE TABLE IF NOT EXISTS dedup (
    k TEXT PRIMARY KEY, expires_at_us INTEGER NOT NULL, part INTEGER NOT NULL, off INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS dedup_expiry ON dedup (expires_at_us);
CREATE TABLE IF NOT EXISTS earlier_copies (
    part INTEGER NOT NULL, off INTEGER NOT NULL, k TEXT NOT NULL, expires_at_us INTEGER NOT NULL,
    PRIMARY KEY (part, off)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS earlier_copies_by_key ON earlier_copies (k);
CREATE INDEX IF NOT EXISTS earlier_copies_expiry ON earlier_copies (expires_at_us);
CREATE TABLE IF NOT EXISTS replay_records (
    grp TEXT NOT NULL, part INTEGER NOT NULL, last_off INTEGER NOT NULL,
    first_off INTEGER NOT NULL, blobs BLOB NOT NULL,
    PRIMARY KEY (grp, part, last_off)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS tokens (
    token_id TEXT PRIMARY KEY, expires_at_us INTEGER NOT NULL,
    part INTEGER NOT NULL, off INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS tokens_expiry ON tokens (expires_at_us);
CREATE TABLE IF NOT EXISTS counters (
    campaign_id TEXT NOT NULL, event_date TEXT NOT NULL, currency TEXT NOT NULL,
    conversions INTEGER NOT NULL, value INTEGER NOT NULL,
    PRIMARY KEY (campaign_id, event_date, currency)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS counters_by_date ON counters (event_date);
CREATE TABLE IF NOT EXISTS minutes (
    minute INTEGER NOT NULL, campaign_id TEXT NOT NULL, currency TEXT NOT NULL,
    events INTEGER NOT NULL, conversions INTEGER NOT NULL, duplicates INTEGER NOT NULL,
    value INTEGER NOT NULL,
    PRIMARY KEY (minute, campaign_id, currency)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS latency (
    minute INTEGER NOT NULL, bucket INTEGER NOT NULL, n INTEGER NOT NULL,
    PRIMARY KEY (minute, bucket)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dim_counters (
    dimension TEXT NOT NULL, dim_value TEXT NOT NULL, campaign_id TEXT NOT NULL,
    event_date TEXT NOT NULL, currency TEXT NOT NULL,
    conversions INTEGER NOT NULL, value INTEGER NOT NULL,
    PRIMARY KEY (dimension, event_date, dim_value, campaign_id, currency)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS sessions (
    key TEXT PRIMARY KEY, opened_at_us INTEGER NOT NULL, last_seen_us INTEGER NOT NULL,
    expires_at_us INTEGER NOT NULL, first_touch TEXT, last_touch TEXT
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS sessions_expiry ON sessions (expires_at_us);
CREATE TABLE IF NOT EXISTS user_touches (
    key TEXT PRIMARY KEY, touch TEXT NOT NULL, at_us INTEGER NOT NULL,
    expires_at_us INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS user_touches_expiry ON user_touches (expires_at_us);
CREATE TABLE IF NOT EXISTS totals (name TEXT PRIMARY KEY, n INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS positions (
    grp TEXT NOT NULL, partition INTEGER NOT NULL, next_offset INTEGER NOT NULL,
    PRIMARY KEY (grp, partition)
) WITHOUT ROWID;
"""
_CHUNK = 500


def chunks(items: Sequence[str]) -> Iterable[Sequence[str]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


def rows_where_in(
    conn: sqlite3.Connection, select: str, column: str, keys: Sequence[str]
) -> Iterator[tuple[Any, ...]]:
    """``select`` (``SELECT … FROM t``) of the rows whose ``column`` is one of ``keys``,
    a few hundred keys per query (SQLite bounds a statement's parameters)."""
    for chunk in chunks(keys):
        marks = ",".join("?" * len(chunk))
        yield from conn.execute(f"{select} WHERE {column} IN ({marks})", chunk)


Remembered = tuple[int, int, int]  # expires_at_us, partition, offset of the counted copy


def remembered_rows(
    conn: sqlite3.Connection, table: str, column: str, keys: list[str]
) -> dict[str, Remembered]:
    select = f"SELECT {column}, expires_at_us, part, off FROM {table}"
    return {row[0]: (row[1], row[2], row[3]) for row in rows_where_in(conn, select, column, keys)}


COUNTER_KEYS = ("campaign_id", "event_date", "currency")
DIM_KEYS = ("dimension", "event_date", "dim_value", "campaign_id", "currency")
MINUTE_KEYS = ("minute", "campaign_id", "currency")
MINUTE_SUMS = ("events", "conversions", "duplicates", "value")


def add_cells(
    conn: sqlite3.Connection,
    table: str,
    key_columns: tuple[str, ...],
    sum_columns: tuple[str, ...],
    cells: Mapping[tuple[Any, ...], Sequence[int]],
) -> int:
    """Add each cell's amounts to its stored row, saturating; how many rows were capped.

    Added here, not in SQL: SQLite turns an integer sum past 64 bits into an
    inexact float, and the batch's own amounts may already be past it.
    """
    where = " AND ".join(f"{c} = ?" for c in key_columns)
    read = f"SELECT {', '.join(sum_columns)} FROM {table} WHERE {where}"
    write = f"INSERT OR REPLACE INTO {table} ({', '.join(key_columns + sum_columns)}) VALUES"
    write += f" ({', '.join('?' * (len(key_columns) + len(sum_columns)))})"
    capped = 0
    rows = []
    for key, amounts in cells.items():
        stored = conn.execute(read, key).fetchone() or (0,) * len(sum_columns)
        exact = [int(old) + amount for old, amount in zip(stored, amounts, strict=True)]
        held = [saturate(total) for total in exact]
        capped += held != exact
        rows.append((*key, *held))
    conn.executemany(write, rows)
    return capped


def held(values: Mapping[str, int]) -> dict[str, int]:
    return {currency: saturate(total) for currency, total in values.items()}


def summed(rows: Iterable[tuple[Any, ...]]) -> dict[str, tuple[int, dict[str, int]]]:
    """(group, currency, conversions, value) rows summed per group, saturating:
    conversions, and value per currency (none for the empty currency)."""
    counts: defaultdict[str, int] = defaultdict(int)
    values: defaultdict[str, dict[str, int]] = defaultdict(dict)
    for group, currency, n, amount in rows:
        counts[str(group)] += int(n)
        if currency:
            held = values[str(group)]
            held[str(currency)] = held.get(str(currency), 0) + int(amount)
    return {
        group: (saturate(n), {c: saturate(v) for c, v in values[group].items()})
        for group, n in counts.items()
    }


# One row per applied batch and partition: the recorded blobs of its counted effects,
# by offset (msgpack), so that recording costs one write per batch, not one per event.
_encode_blobs = msgspec.msgpack.Encoder().encode
_decode_blobs = msgspec.msgpack.Decoder(dict[int, bytes]).decode


def write_blobs(
    conn: sqlite3.Connection,
    group: str,
    firsts: Mapping[int, int],
    blobs: Mapping[int, Mapping[int, bytes]],
) -> None:
    """Keep the batch's ``blobs`` (partition -> offset -> blob), and drop the rows a batch
    starting at ``firsts`` leaves behind: everything below its first offset was published."""
    conn.executemany(
        "DELETE FROM replay_records WHERE grp = ? AND part = ? AND last_off < ?",
        [(group, part, first) for part, first in firsts.items()],
    )
    conn.executemany(
        "INSERT OR REPLACE INTO replay_records VALUES (?, ?, ?, ?, ?)",
        [
            (group, part, max(found), min(found), _encode_blobs(found))
            for part, found in blobs.items()
        ],
    )


def recorded_blobs(
    conn: sqlite3.Connection, group: str, firsts: Mapping[int, int], applied: Mapping[int, int]
) -> dict[tuple[int, int], bytes]:
    """The blobs kept with the counted copies a replay covers, by position."""
    found: dict[tuple[int, int], bytes] = {}
    for part, first in firsts.items():
        rows = conn.execute(
            "SELECT blobs FROM replay_records WHERE grp = ? AND part = ? AND last_off >= ?"
            " AND first_off < ?",
            (group, part, first, applied.get(part, 0)),
        )
        for (packed,) in rows:
            found.update(((part, off), blob) for off, blob in _decode_blobs(packed).items())
    return found


def earlier_copies(conn: sqlite3.Connection, keys: list[str]) -> set[tuple[int, int]]:
    """The positions of the displaced counted copies of ``keys`` (table earlier_copies)."""
    rows = rows_where_in(conn, "SELECT part, off FROM earlier_copies", "k", list(set(keys)))
    return {(int(p), int(o)) for p, o in rows}
