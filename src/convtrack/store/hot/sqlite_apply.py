"""One applied batch of the SQLite hot store, in three steps: read what the batch
meets (its group's positions, the remembered ids and tokens, and for a replay the
verdicts and blobs it was given), judge each effect in memory (``Tally``), then
write everything in the caller's transaction.

A replayed effect (below its partition's applied position) gets the verdict its
first application got and counts nothing again; a new one is a duplicate when an
id or token it carries is still remembered at its receive time.
"""

from __future__ import annotations

import sqlite3
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from convtrack.store.hot.base import ApplyResult, Effect
from convtrack.store.hot.livestats import ANOMALY_US, latency_bucket
from convtrack.store.hot.sqlite_rows import (
    COUNTER_KEYS,
    DIM_KEYS,
    MINUTE_KEYS,
    MINUTE_SUMS,
    Remembered,
    add_cells,
    earlier_copies,
    recorded_blobs,
    remembered_rows,
    write_blobs,
)
from convtrack.store.hot.sqlite_staged import Row, StagedTable

NOT_REMEMBERED: Remembered = (0, -1, -1)
_UPSERT = (
    "ON CONFLICT DO UPDATE SET expires_at_us = excluded.expires_at_us,"
    " part = excluded.part, off = excluded.off"
)


@dataclass(slots=True)
class Amounts:
    """A counter cell: conversions and their value (minor units)."""

    conversions: int = 0
    value: int = 0

    def sums(self) -> tuple[int, int]:  # in the order of the tables' sum columns
        return self.conversions, self.value


@dataclass(slots=True)
class MinuteAmounts:
    """A minute's cell of the live view (columns ``MINUTE_SUMS``)."""

    events: int = 0
    conversions: int = 0
    duplicates: int = 0
    value: int = 0

    def sums(self) -> tuple[int, int, int, int]:
        return self.events, self.conversions, self.duplicates, self.value


@dataclass(frozen=True, slots=True)
class Met:
    """What the batch meets in the store before it is judged."""

    applied: dict[int, int]  # partition -> next offset already applied
    ids: dict[str, Remembered]  # dedup key -> its counted copy
    tokens: dict[str, Remembered]  # conversion token id -> its counted copy
    earlier: set[tuple[int, int]]  # displaced counted copies a replay covers
    blobs: dict[tuple[int, int], bytes]  # the blobs kept with those counted copies
    firsts: dict[int, int]  # partition -> the batch's first offset

    @classmethod
    def read(
        cls,
        conn: sqlite3.Connection,
        group: str,
        effects: Sequence[Effect],
        keys: list[str],
        dedup: StagedTable,
    ) -> Met:
        applied = dict(
            conn.execute("SELECT partition, next_offset FROM positions WHERE grp = ?", (group,))
        )
        ids = {k: (row[1], row[2], row[3]) for k, row in dedup.rows(conn, keys).items()}
        token_ids = list({e.token_id for e in effects if e.token_id is not None})
        tokens = remembered_rows(conn, "tokens", "token_id", token_ids) if token_ids else {}
        replayed = [
            k for k, e in zip(keys, effects, strict=True) if e.offset < applied.get(e.partition, 0)
        ]
        firsts: dict[int, int] = {}
        for e in effects:
            firsts[e.partition] = min(e.offset, firsts.get(e.partition, e.offset))
        return cls(
            applied=applied,
            ids=ids,
            tokens=tokens,
            earlier=earlier_copies(conn, replayed) if replayed else set(),
            blobs=recorded_blobs(conn, group, firsts, applied) if replayed else {},
            firsts=firsts,
        )


@dataclass(slots=True)
class Tally:
    """The batch's verdicts and everything it adds, judged in memory."""

    met: Met
    window_us: int
    now_us: int
    counted: list[bool] = field(default_factory=list)
    new_ids: dict[str, Remembered] = field(default_factory=dict)
    new_tokens: dict[str, Remembered] = field(default_factory=dict)
    # Positions of counted copies whose dedup row a later counted copy took over
    # (the window had ended): a replay still owns them.
    displaced: dict[tuple[int, int], tuple[str, int]] = field(default_factory=dict)
    counters: defaultdict[tuple[str, str, str], Amounts] = field(
        default_factory=lambda: defaultdict(Amounts)
    )
    dims: defaultdict[tuple[str, str, str, str, str], Amounts] = field(
        default_factory=lambda: defaultdict(Amounts)
    )
    minutes: defaultdict[tuple[int, str, str], MinuteAmounts] = field(
        default_factory=lambda: defaultdict(MinuteAmounts)
    )
    latency: defaultdict[tuple[int, int], int] = field(default_factory=lambda: defaultdict(int))
    handed_back: dict[int, bytes] = field(default_factory=dict)  # batch index -> blob
    new_blobs: defaultdict[int, dict[int, bytes]] = field(default_factory=lambda: defaultdict(dict))
    duplicates: int = 0
    anomalies: int = 0

    def judge(self, index: int, key: str, effect: Effect) -> None:
        here = (effect.partition, effect.offset)
        met = self.met
        if effect.offset < met.applied.get(effect.partition, 0):
            # Applied before (a replay): the verdict it got, and no second count.
            own = met.ids.get(key, NOT_REMEMBERED)[1:] == here or here in met.earlier
            self.counted.append(own)
            if own and here in met.blobs:
                self.handed_back[index] = met.blobs[here]
            return
        at = effect.received_at_us
        previous = self.new_ids.get(key, met.ids.get(key, NOT_REMEMBERED))
        is_dup = previous[0] > at
        if not is_dup and effect.token_id is not None:
            token = self.new_tokens.get(
                effect.token_id, met.tokens.get(effect.token_id, NOT_REMEMBERED)
            )
            is_dup = token[0] > at
        now_minute = self.now_us // 60_000_000
        minute = self.minutes[(now_minute, effect.campaign_id, effect.currency or "")]
        minute.events += 1
        if is_dup:
            self.duplicates += 1
            minute.duplicates += 1
            self.counted.append(False)
            return
        self.counted.append(True)
        self._remember(key, effect, previous, here)
        if effect.is_conversion:
            self._count(effect, minute)
        lag_us = max(0, self.now_us - at)
        self.latency[(now_minute, latency_bucket(lag_us))] += 1
        if lag_us > ANOMALY_US:
            self.anomalies += 1

    def _remember(
        self, key: str, effect: Effect, previous: Remembered, here: tuple[int, int]
    ) -> None:
        at = effect.received_at_us
        if previous[1] >= 0:
            self.displaced[(previous[1], previous[2])] = (key, at + self.window_us)
        self.new_ids[key] = (at + self.window_us, *here)
        if effect.recorded:
            self.new_blobs[effect.partition][effect.offset] = effect.recorded
        if effect.token_id is not None:
            expires = effect.token_expires_at_us or at + self.window_us
            self.new_tokens[effect.token_id] = (expires, *here)

    def _count(self, effect: Effect, minute: MinuteAmounts) -> None:
        value = effect.value or 0
        campaign, date, currency = effect.campaign_id, effect.event_date, effect.currency or ""
        cell = self.counters[(campaign, date, currency)]
        cell.conversions += 1
        cell.value += value
        for dimension, dim_value in effect.dimensions.items():
            dim = self.dims[(dimension, date, dim_value, campaign, currency)]
            dim.conversions += 1
            dim.value += value
        minute.conversions += 1
        minute.value += value


def dedup_table(**cycles: int) -> StagedTable:
    """``cycles``: ``StagedTable``'s ``cycle_rows`` and ``min_stretch``."""
    return StagedTable("dedup", ("k", "expires_at_us", "part", "off"), _UPSERT, **cycles)


@dataclass(frozen=True, slots=True)
class Applied:
    """One judged and written batch: its result, and the dedup rows it staged (they
    answer lookups once the transaction commits: ``StagedTable.staged``)."""

    result: ApplyResult
    dedup_rows: list[Row]
    dedup_seq: int  # their journal row


def apply_batch(
    conn: sqlite3.Connection,
    group: str,
    effects: Sequence[Effect],
    positions: Mapping[int, int],
    now_us: int,
    window_us: int,
    dedup: StagedTable,
) -> Applied:
    """Judge and write one batch, in the caller's transaction."""
    keys = [f"{e.source}\x00{e.event_id}" for e in effects]
    tally = Tally(Met.read(conn, group, effects, keys, dedup), window_us, now_us)
    for index, (key, effect) in enumerate(zip(keys, effects, strict=True)):
        tally.judge(index, key, effect)
    rows = [(k, *v) for k, v in tally.new_ids.items()]
    seq = dedup.stage(conn, rows)
    overflows = _write(conn, group, tally, positions)
    result = ApplyResult(
        counted=tally.counted,
        duplicates=tally.duplicates,
        latency_anomalies=tally.anomalies,
        value_overflows=overflows,
        recorded=tally.handed_back,
    )
    return Applied(result, rows, seq)


def _write(conn: sqlite3.Connection, group: str, tally: Tally, positions: Mapping[int, int]) -> int:
    """Everything the tally adds but its dedup rows; how many counter cells were capped."""
    write_blobs(conn, group, tally.met.firsts, tally.new_blobs)
    conn.executemany(
        "INSERT OR REPLACE INTO earlier_copies VALUES (?, ?, ?, ?)",
        [(*where, k, expires) for where, (k, expires) in tally.displaced.items()],
    )
    if tally.new_tokens:
        conn.executemany(
            "INSERT INTO tokens VALUES (?, ?, ?, ?) " + _UPSERT,
            [(k, *v) for k, v in tally.new_tokens.items()],
        )
    sums = ("conversions", "value")
    counters = {key: cell.sums() for key, cell in tally.counters.items()}
    overflows = add_cells(conn, "counters", COUNTER_KEYS, sums, counters)
    add_cells(conn, "dim_counters", DIM_KEYS, sums, {k: c.sums() for k, c in tally.dims.items()})
    minutes = {key: cell.sums() for key, cell in tally.minutes.items()}
    add_cells(conn, "minutes", MINUTE_KEYS, MINUTE_SUMS, minutes)
    conn.executemany(
        "INSERT INTO latency VALUES (?, ?, ?) ON CONFLICT DO UPDATE SET n = n + excluded.n",
        [(*k, n) for k, n in tally.latency.items()],
    )
    conn.executemany(
        "INSERT INTO totals VALUES (?, ?) ON CONFLICT DO UPDATE SET n = n + excluded.n",
        [
            ("duplicates", tally.duplicates),
            ("latency_anomalies", tally.anomalies),
            ("value_overflows", overflows),
        ],
    )
    conn.executemany(
        "INSERT INTO positions VALUES (?, ?, ?) ON CONFLICT DO UPDATE SET"
        " next_offset = MAX(next_offset, excluded.next_offset)",
        [(group, p, o) for p, o in positions.items()],
    )
    return overflows
