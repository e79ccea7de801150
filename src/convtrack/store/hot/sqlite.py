"""The embedded hot store: one SQLite database, one transaction per applied batch.

``synchronous=NORMAL`` is enough here: the positions live in the same
transaction as the effects, so losing the last commits to a power cut only
rewinds both together, and the (fsynced) log replays them.
"""

from __future__ import annotations

import sqlite3
import threading
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import msgspec

from convtrack.errors import StoreError
from convtrack.sqlitekit import connect
from convtrack.store.hot import sqlite_excluded
from convtrack.store.hot.base import (
    ApplyResult,
    CampaignLive,
    ConversionStats,
    Effect,
    HotStore,
    LiveStats,
    SessionState,
    UserTouch,
)
from convtrack.store.hot.livestats import (
    ANOMALY_US,
    latency_bucket,
    minute_rows,
    percentile_ms,
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS dedup (
    k TEXT PRIMARY KEY, expires_at_us INTEGER NOT NULL, part INTEGER NOT NULL, off INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS dedup_expiry ON dedup (expires_at_us);
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


def _chunks(items: Sequence[str]) -> Iterable[Sequence[str]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


Remembered = tuple[int, int, int]  # expires_at_us, partition, offset of the counted copy


def _select(
    conn: sqlite3.Connection, table: str, column: str, keys: list[str]
) -> dict[str, Remembered]:
    found: dict[str, Remembered] = {}
    for chunk in _chunks(keys):
        marks = ",".join("?" * len(chunk))
        rows = conn.execute(
            f"SELECT {column}, expires_at_us, part, off FROM {table} WHERE {column} IN ({marks})",
            chunk,
        )
        found.update((row[0], (row[1], row[2], row[3])) for row in rows)
    return found


class SqliteHotStore(HotStore):
    def __init__(
        self, path: Path, *, dedup_window_secs: int = 86_400, minute_retention: int = 1440
    ) -> None:
        self._window_us = dedup_window_secs * 1_000_000
        self._minute_retention = minute_retention
        try:
            self._conn = connect(path, "normal")
            self._conn.executescript(_SCHEMA)
            self._reader = connect(path, "normal")
            self._conn.executescript(sqlite_excluded.EXCLUDED_SCHEMA)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the hot store at {path}: {exc}") from exc
        self._read_lock = threading.Lock()

    # -- writes (one writer: the processor) -------------------------------------------

    def apply(
        self,
        group: str,
        effects: Sequence[Effect],
        positions: Mapping[int, int],
        now_us: int,
        sessions: Sequence[SessionState] = (),
        touches: Sequence[UserTouch] = (),
    ) -> ApplyResult:
        try:
            with self._conn:
                self._conn.execute("BEGIN IMMEDIATE")
                replays = sqlite_excluded.replayed(self._conn, group, effects)
                result = self._apply(group, effects, positions, now_us)
                self._write_sessions(sessions, touches)
                sqlite_excluded.add_excluded(self._conn, effects, result.counted, replays)
                return result
        except sqlite3.Error as exc:
            raise StoreError(f"hot store apply failed: {exc}") from exc

    def _apply(
        self, group: str, effects: Sequence[Effect], positions: Mapping[int, int], now_us: int
    ) -> ApplyResult:
        conn = self._conn
        applied = dict(
            conn.execute("SELECT partition, next_offset FROM positions WHERE grp = ?", (group,))
        )
        keys = [f"{e.source}\x00{e.event_id}" for e in effects]
        known = _select(conn, "dedup", "k", list(set(keys)))
        token_ids = list({e.token_id for e in effects if e.token_id is not None})
        known_tokens = _select(conn, "tokens", "token_id", token_ids) if token_ids else {}

        counted: list[bool] = []
        new_keys: dict[str, Remembered] = {}
        new_tokens: dict[str, Remembered] = {}
        counters: defaultdict[tuple[str, str, str], list[int]] = defaultdict(lambda: [0, 0])
        dims: defaultdict[tuple[str, str, str, str, str], list[int]] = defaultdict(lambda: [0, 0])
        minutes: defaultdict[tuple[int, str, str], list[int]] = defaultdict(lambda: [0, 0, 0, 0])
        latency: defaultdict[tuple[int, int], int] = defaultdict(int)
        duplicates = anomalies = 0
        minute = now_us // 60_000_000
        no_entry: Remembered = (0, -1, -1)
        for key, effect in zip(keys, effects, strict=True):
            here = (effect.partition, effect.offset)
            if effect.offset < applied.get(effect.partition, 0):
                # Applied before (a replay): the verdict it got, and no second count.
                counted.append(known.get(key, no_entry)[1:] == here)
                continue
            at = effect.received_at_us
            is_dup = new_keys.get(key, known.get(key, no_entry))[0] > at
            if not is_dup and effect.token_id is not None:
                token = new_tokens.get(effect.token_id, known_tokens.get(effect.token_id, no_entry))
                is_dup = token[0] > at
            campaign = effect.campaign_id
            currency = effect.currency or ""
            bucket = minutes[(minute, campaign, currency)]
            bucket[0] += 1
            if is_dup:
                duplicates += 1
                bucket[2] += 1
                counted.append(False)
                continue
            counted.append(True)
            new_keys[key] = (at + self._window_us, *here)
            if effect.token_id is not None:
                expires = effect.token_expires_at_us or at + self._window_us
                new_tokens[effect.token_id] = (expires, *here)
            if effect.is_conversion:
                value = effect.value or 0
                row = counters[(campaign, effect.event_date, currency)]
                row[0] += 1
                row[1] += value
                for dimension, dim_value in effect.dimensions.items():
                    cell = dims[(dimension, effect.event_date, dim_value, campaign, currency)]
                    cell[0] += 1
                    cell[1] += value
                bucket[1] += 1
                bucket[3] += value
            lag_us = max(0, now_us - at)
            latency[(minute, latency_bucket(lag_us))] += 1
            if lag_us > ANOMALY_US:
                anomalies += 1

        upsert = (
            " ON CONFLICT DO UPDATE SET expires_at_us = excluded.expires_at_us,"
            " part = excluded.part, off = excluded.off"
        )
        conn.executemany(
            "INSERT INTO dedup VALUES (?, ?, ?, ?)" + upsert, [(k, *v) for k, v in new_keys.items()]
        )
        if new_tokens:
            conn.executemany(
                "INSERT INTO tokens VALUES (?, ?, ?, ?)" + upsert,
                [(k, *v) for k, v in new_tokens.items()],
            )
        for row_key, (n, amount) in counters.items():  # a row per campaign, date, currency
            (total,) = conn.execute(
                "INSERT INTO counters VALUES (?, ?, ?, ?, ?) ON CONFLICT DO UPDATE SET"
                " conversions = conversions + excluded.conversions, value = value + excluded.value"
                " RETURNING value",
                (*row_key, n, amount),
            ).fetchone()
            if not isinstance(total, int):  # SQLite turns an overflowing sum into a float
                raise StoreError(f"value total of {row_key} overflows 64 bits")
        conn.executemany(
            "INSERT INTO dim_counters (dimension, event_date, dim_value, campaign_id, currency,"
            " conversions, value) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO UPDATE SET"
            " conversions = conversions + excluded.conversions, value = value + excluded.value",
            [(*k, v[0], v[1]) for k, v in dims.items()],
        )
        conn.executemany(
            "INSERT INTO minutes VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO UPDATE SET"
            " events = events + excluded.events, conversions = conversions + excluded.conversions,"
            " duplicates = duplicates + excluded.duplicates, value = value + excluded.value",
            [(*k, *v) for k, v in minutes.items()],
        )
        conn.executemany(
            "INSERT INTO latency VALUES (?, ?, ?) ON CONFLICT DO UPDATE SET n = n + excluded.n",
            [(*k, n) for k, n in latency.items()],
        )
        conn.executemany(
            "INSERT INTO totals VALUES (?, ?) ON CONFLICT DO UPDATE SET n = n + excluded.n",
            [("duplicates", duplicates), ("latency_anomalies", anomalies)],
        )
        conn.executemany(
            "INSERT INTO positions VALUES (?, ?, ?) ON CONFLICT DO UPDATE SET"
            " next_offset = MAX(next_offset, excluded.next_offset)",
            [(group, p, o) for p, o in positions.items()],
        )
        return ApplyResult(counted=counted, duplicates=duplicates, latency_anomalies=anomalies)

    def _write_sessions(
        self, sessions: Sequence[SessionState], touches: Sequence[UserTouch]
    ) -> None:
        encode = msgspec.json.encode
        self._conn.executemany(
            "INSERT OR REPLACE INTO sessions VALUES (?, ?, ?, ?, ?, ?)",
            [
                (s.key, s.opened_at_us, s.last_seen_us, s.expires_at_us,
                 None if s.first_touch is None else encode(s.first_touch).decode(),
                 None if s.last_touch is None else encode(s.last_touch).decode())
                for s in sessions
            ],
        )  # fmt: skip
        self._conn.executemany(
            "INSERT OR REPLACE INTO user_touches VALUES (?, ?, ?, ?)",
            [(t.key, encode(t.touch).decode(), t.at_us, t.expires_at_us) for t in touches],
        )

    def sessions(self, keys: Sequence[str]) -> dict[str, SessionState]:
        found: dict[str, SessionState] = {}
        for chunk in _chunks(list(set(keys))):
            marks = ",".join("?" * len(chunk))
            for row in self._conn.execute(
                f"SELECT key, opened_at_us, last_seen_us, expires_at_us, first_touch, last_touch"
                f" FROM sessions WHERE key IN ({marks})",
                chunk,
            ):
                found[row[0]] = SessionState(
                    key=row[0], opened_at_us=row[1], last_seen_us=row[2], expires_at_us=row[3],
                    first_touch=None if row[4] is None else msgspec.json.decode(row[4]),
                    last_touch=None if row[5] is None else msgspec.json.decode(row[5]),
                )  # fmt: skip
        return found

    def user_touches(self, keys: Sequence[str]) -> dict[str, UserTouch]:
        found: dict[str, UserTouch] = {}
        for chunk in _chunks(list(set(keys))):
            marks = ",".join("?" * len(chunk))
            for row in self._conn.execute(
                f"SELECT key, touch, at_us, expires_at_us FROM user_touches WHERE key IN ({marks})",
                chunk,
            ):
                found[row[0]] = UserTouch(
                    key=row[0], touch=msgspec.json.decode(row[1]), at_us=row[2],
                    expires_at_us=row[3],
                )  # fmt: skip
        return found

    def breakdown(self, dimension: str, date: str) -> list[tuple[str, ConversionStats]]:
        rows = self._read(
            "SELECT dim_value, currency, SUM(conversions), SUM(value) FROM dim_counters"
            " WHERE dimension = ? AND event_date = ? GROUP BY dim_value, currency",
            (dimension, date),
        )
        totals: dict[str, list[Any]] = {}
        for dim_value, currency, n, amount in rows:
            entry = totals.setdefault(dim_value, [0, {}])
            entry[0] += int(n)
            if currency:
                entry[1][currency] = int(amount)
        return [
            (key, ConversionStats(None, date, entry[0], entry[1]))
            for key, entry in sorted(totals.items())
        ]

    def expire(self, watermark_us: int, max_rows: int) -> int:
        removed = 0
        oldest_minute = watermark_us // 60_000_000 - self._minute_retention
        try:
            with self._conn:
                self._conn.execute("BEGIN IMMEDIATE")
                for table, column in (
                    ("dedup", "k"),
                    ("tokens", "token_id"),
                    ("sessions", "key"),
                    ("user_touches", "key"),
                ):
                    removed += self._conn.execute(
                        f"DELETE FROM {table} WHERE {column} IN (SELECT {column} FROM {table}"
                        " WHERE expires_at_us <= ? LIMIT ?)",
                        (watermark_us, max_rows),
                    ).rowcount
                for table in ("minutes", "latency"):
                    self._conn.execute(f"DELETE FROM {table} WHERE minute < ?", (oldest_minute,))
        except sqlite3.Error as exc:
            raise StoreError(f"hot store expiry failed: {exc}") from exc
        return removed

    # -- reads (any thread) -------------------------------------------------------------

    def _read(self, sql: str, args: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        with self._read_lock:
            return self._reader.execute(sql, args).fetchall()

    def positions(self, group: str) -> dict[int, int]:
        rows = self._read("SELECT partition, next_offset FROM positions WHERE grp = ?", (group,))
        return {int(p): int(o) for p, o in rows}

    def conversions(self, campaign_id: str | None, date: str) -> ConversionStats:
        if campaign_id is None:
            rows = self._read(
                "SELECT currency, SUM(conversions), SUM(value) FROM counters"
                " WHERE event_date = ? GROUP BY currency",
                (date,),
            )
        else:
            rows = self._read(
                "SELECT currency, conversions, value FROM counters"
                " WHERE campaign_id = ? AND event_date = ?",
                (campaign_id, date),
            )
        conversions = sum(int(r[1]) for r in rows)
        value = {str(r[0]): int(r[2]) for r in rows if r[0]}
        return ConversionStats(campaign_id, date, conversions, value)

    def campaign_totals(self, date: str) -> list[ConversionStats]:
        rows = self._read(
            "SELECT campaign_id, currency, conversions, value FROM counters"
            " WHERE event_date = ? AND conversions > 0 ORDER BY campaign_id, currency",
            (date,),
        )
        totals: dict[str, tuple[int, dict[str, int]]] = {}
        for campaign, currency, n, amount in rows:
            count, value = totals.get(str(campaign), (0, {}))
            if currency:
                value[str(currency)] = int(amount)
            totals[str(campaign)] = (count + int(n), value)
        return [ConversionStats(c, date, n, v) for c, (n, v) in totals.items()]

    def _total(self, name: str) -> int:
        rows = self._read("SELECT n FROM totals WHERE name = ?", (name,))
        return int(rows[0][0]) if rows else 0

    def live(self, now_us: int, window_minutes: int, latency_minutes: int) -> LiveStats:
        minute = now_us // 60_000_000
        rows = self._read(
            "SELECT minute, campaign_id, currency, events, conversions, duplicates, value"
            " FROM minutes WHERE minute > ?",
            (minute - window_minutes,),
        )
        value: defaultdict[str, int] = defaultdict(int)
        by_campaign: defaultdict[str, int] = defaultdict(int)
        campaign_value: defaultdict[str, defaultdict[str, int]] = defaultdict(
            lambda: defaultdict(int)
        )
        per_minute: defaultdict[int, list[int]] = defaultdict(lambda: [0, 0, 0])
        for m, campaign, currency, n_events, n_conv, n_dup, n_value in rows:
            by_campaign[campaign] += n_conv
            if currency and n_conv:
                value[currency] += n_value
                campaign_value[campaign][currency] += n_value
            slot = per_minute[m]
            slot[0] += n_events
            slot[1] += n_conv
            slot[2] += n_dup
        histogram = {
            int(bucket): int(n)
            for bucket, n in self._read(
                "SELECT bucket, SUM(n) FROM latency WHERE minute > ? GROUP BY bucket",
                (minute - latency_minutes,),
            )
        }
        campaigns = [
            CampaignLive(c, n, dict(campaign_value[c])) for c, n in by_campaign.items() if n
        ]
        campaigns.sort(key=lambda c: (-c.conversions, c.campaign_id))
        return LiveStats(
            window_minutes=window_minutes,
            events=sum(v[0] for v in per_minute.values()),
            conversions=sum(v[1] for v in per_minute.values()),
            duplicates=sum(v[2] for v in per_minute.values()),
            value=dict(value),
            campaigns=campaigns,
            latency_ms={
                "p50": percentile_ms(histogram, 0.50),
                "p95": percentile_ms(histogram, 0.95),
                "p99": percentile_ms(histogram, 0.99),
            },
            latency_samples=sum(histogram.values()),
            duplicates_total=self._total("duplicates"),
            latency_anomalies_total=self._total("latency_anomalies"),
            per_minute=minute_rows(per_minute),
        )

    def excluded(self, campaign_id: str | None, date: str) -> dict[str, int]:
        args = (date,) if campaign_id is None else (date, campaign_id)
        query = sqlite_excluded.excluded_query(campaign_id)
        return sqlite_excluded.excluded_totals(self._read(query, args))

    def remembered(self) -> int:
        rows = self._read("SELECT (SELECT COUNT(*) FROM dedup) + (SELECT COUNT(*) FROM tokens)")
        return int(str(rows[0][0]))

    def close(self) -> None:
        self._conn.close()
        self._reader.close()
