"""The embedded hot store: one SQLite database, one transaction per applied batch.

Dedup entries, sessions and touches are staged per batch and merged into
their tables in key order, a stretch per batch (sqlite_staged.py): their keys
are spread over the tables, and writing them in place cost a page per row.

``synchronous=NORMAL`` is enough here: the positions live in the same
transaction as the effects, so losing the last commits to a power cut only
rewinds both together, and the (fsynced) log replays them.
"""

from __future__ import annotations

import sqlite3
import threading
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from convtrack.errors import StoreError
from convtrack.sqlitekit import connect, translated
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
    minute_rows,
    percentile_ms,
)
from convtrack.store.hot.sqlite_apply import apply_batch, dedup_table
from convtrack.store.hot.sqlite_rows import SCHEMA, held, summed
from convtrack.store.hot.sqlite_staged import CYCLE_ROWS, MIN_STRETCH, STAGED_SCHEMA
from convtrack.store.hot.sqlite_states import (
    StateCache,
    session_of,
    session_row,
    sessions_table,
    touch_of,
    touch_row,
    touches_table,
)


class SqliteHotStore(HotStore):
    def __init__(
        self,
        path: Path,
        *,
        dedup_window_secs: int = 86_400,
        minute_retention: int = 1440,
        cycle_rows: int = CYCLE_ROWS,
        min_stretch: int = MIN_STRETCH,
    ) -> None:
        """``cycle_rows``, ``min_stretch``: when staged rows merge, and how many a batch
        merges at least (sqlite_staged.py)."""
        self._window_us = dedup_window_secs * 1_000_000
        self._minute_retention = minute_retention
        try:
            self._conn = connect(path, "normal")
            self._conn.executescript(SCHEMA)
            self._reader = connect(path, "normal")
            self._conn.executescript(sqlite_excluded.EXCLUDED_SCHEMA)
            self._conn.executescript(STAGED_SCHEMA)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the hot store at {path}: {exc}") from exc
        self._read_lock = threading.Lock()
        self._sessions: StateCache[SessionState] = StateCache()
        self._touches: StateCache[UserTouch] = StateCache()
        cycles = {"cycle_rows": cycle_rows, "min_stretch": min_stretch}
        self._staged_dedup = dedup_table(**cycles)
        self._staged_sessions = sessions_table(**cycles)
        self._staged_touches = touches_table(**cycles)
        self._staged = (self._staged_dedup, self._staged_sessions, self._staged_touches)
        try:
            self._data_version = self._load_staged()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read the hot store's staged rows at {path}: {exc}") from exc

    def _load_staged(self) -> int:
        """Read the journal; the file's ``data_version`` it was read at."""
        for table in self._staged:
            table.load(self._conn)
        return int(self._conn.execute("PRAGMA data_version").fetchone()[0])

    def _catch_up(self) -> None:
        """Inside a write transaction: if another connection wrote since this one last did
        (a second processor on the file, which only a zombie or a test makes), what this
        store holds in memory may be stale: read the journal again and drop the caches."""
        if int(self._conn.execute("PRAGMA data_version").fetchone()[0]) != self._data_version:
            self._data_version = self._load_staged()
            self._sessions.clear()
            self._touches.clear()

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
        session_rows = [session_row(state) for state in sessions]
        touch_rows = [touch_row(touch) for touch in touches]
        try:
            with self._conn:
                self._conn.execute("BEGIN IMMEDIATE")
                self._catch_up()
                replays = sqlite_excluded.replayed(self._conn, group, effects)
                applied = apply_batch(
                    self._conn, group, effects, positions, now_us, self._window_us,
                    self._staged_dedup,
                )  # fmt: skip
                session_seq = self._staged_sessions.stage(self._conn, session_rows)
                touch_seq = self._staged_touches.stage(self._conn, touch_rows)
                result = applied.result
                sqlite_excluded.add_excluded(self._conn, effects, result.counted, replays)
                staged = (len(applied.dedup_rows), len(session_rows), len(touch_rows))
                stretches = [
                    table.merge_stretch(self._conn, 2 * n)
                    for table, n in zip(self._staged, staged, strict=True)
                ]
        except sqlite3.Error as exc:
            raise StoreError(f"hot store apply failed: {exc}") from exc
        # Committed: the staged rows answer from now on, the merged ones from the tables
        # (in this order: a key merged and staged again by this batch is in both places).
        self._staged_dedup.staged(applied.dedup_rows, applied.dedup_seq)
        self._staged_sessions.staged(session_rows, session_seq)
        self._staged_touches.staged(touch_rows, touch_seq)
        for table, stretch in zip(self._staged, stretches, strict=True):
            table.merged(stretch)
        self._sessions.written(sessions)
        self._touches.written(touches)
        return result

    def sessions(self, keys: Sequence[str]) -> dict[str, SessionState]:
        found, missing = self._sessions.split(keys)
        if missing:
            with translated("hot store read failed"):
                rows = self._staged_sessions.rows(self._conn, missing)
            found.update((key, session_of(row)) for key, row in rows.items())
        return found

    def user_touches(self, keys: Sequence[str]) -> dict[str, UserTouch]:
        found, missing = self._touches.split(keys)
        if missing:
            with translated("hot store read failed"):
                rows = self._staged_touches.rows(self._conn, missing)
            found.update((key, touch_of(row)) for key, row in rows.items())
        return found

    def breakdown(self, dimension: str, date: str) -> list[tuple[str, ConversionStats]]:
        # Summed here, not with SQL SUM: a sum over rows can pass 64 bits even when
        # each row is within them (SQLite's SUM then fails with "integer overflow").
        rows = self._read(
            "SELECT dim_value, currency, conversions, value FROM dim_counters"
            " WHERE dimension = ? AND event_date = ?",
            (dimension, date),
        )
        return [
            (key, ConversionStats(None, date, n, value))
            for key, (n, value) in sorted(summed(rows).items())
        ]

    def expire(self, watermark_us: int, max_rows: int) -> int:
        removed = 0
        oldest_minute = watermark_us // 60_000_000 - self._minute_retention
        try:
            with self._conn:
                self._conn.execute("BEGIN IMMEDIATE")
                self._catch_up()
                removed += sum(staged.expire(self._conn, watermark_us) for staged in self._staged)
                deleted: dict[str, list[str]] = {}
                for table, column in (
                    ("dedup", "k"),
                    ("tokens", "token_id"),
                    ("sessions", "key"),
                    ("user_touches", "key"),
                ):
                    keys = deleted[table] = [
                        key
                        for (key,) in self._conn.execute(
                            f"DELETE FROM {table} WHERE {column} IN (SELECT {column} FROM"
                            f" {table} WHERE expires_at_us <= ? LIMIT ?) RETURNING {column}",
                            (watermark_us, max_rows),
                        )
                    ]
                    removed += len(keys)
                self._conn.execute(
                    "DELETE FROM earlier_copies WHERE (part, off) IN (SELECT part, off"
                    " FROM earlier_copies WHERE expires_at_us <= ? LIMIT ?)",
                    (watermark_us, max_rows),
                )
                for table in ("minutes", "latency"):
                    self._conn.execute(f"DELETE FROM {table} WHERE minute < ?", (oldest_minute,))
        except sqlite3.Error as exc:
            raise StoreError(f"hot store expiry failed: {exc}") from exc
        for staged in self._staged:
            staged.ended(watermark_us, deleted[staged.table])
        self._sessions.expired(watermark_us)
        self._touches.expired(watermark_us)
        return removed

    # -- reads (any thread) -------------------------------------------------------------

    def _read(self, sql: str, args: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        with self._read_lock, translated("hot store read failed"):
            return self._reader.execute(sql, args).fetchall()

    def positions(self, group: str) -> dict[int, int]:
        rows = self._read("SELECT partition, next_offset FROM positions WHERE grp = ?", (group,))
        return {int(p): int(o) for p, o in rows}

    def conversions(self, campaign_id: str | None, date: str) -> ConversionStats:
        if campaign_id is None:
            rows = self._read(
                "SELECT '', currency, conversions, value FROM counters WHERE event_date = ?",
                (date,),
            )
        else:
            rows = self._read(
                "SELECT '', currency, conversions, value FROM counters"
                " WHERE campaign_id = ? AND event_date = ?",
                (campaign_id, date),
            )
        conversions, value = summed(rows).get("", (0, {}))
        return ConversionStats(campaign_id, date, conversions, value)

    def campaign_totals(self, date: str) -> list[ConversionStats]:
        rows = self._read(
            "SELECT campaign_id, currency, conversions, value FROM counters"
            " WHERE event_date = ? AND conversions > 0 ORDER BY campaign_id, currency",
            (date,),
        )
        return [ConversionStats(c, date, n, v) for c, (n, v) in summed(rows).items()]

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
            CampaignLive(c, n, held(campaign_value[c])) for c, n in by_campaign.items() if n
        ]
        campaigns.sort(key=lambda c: (-c.conversions, c.campaign_id))
        return LiveStats(
            window_minutes=window_minutes,
            events=sum(v[0] for v in per_minute.values()),
            conversions=sum(v[1] for v in per_minute.values()),
            duplicates=sum(v[2] for v in per_minute.values()),
            value=held(value),
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
            value_overflows_total=self._total("value_overflows"),
        )

    def excluded(self, campaign_id: str | None, date: str) -> dict[str, int]:
        args = (date,) if campaign_id is None else (date, campaign_id)
        query = sqlite_excluded.excluded_query(campaign_id)
        return sqlite_excluded.excluded_totals(self._read(query, args))

    def remembered(self) -> int:
        rows = self._read("SELECT (SELECT COUNT(*) FROM dedup) + (SELECT COUNT(*) FROM tokens)")
        # The staged ids are this writer's to count (the journal may hold merged ones still).
        return int(str(rows[0][0])) + self._staged_dedup.unstored

    def close(self) -> None:
        self._conn.close()
        self._reader.close()
