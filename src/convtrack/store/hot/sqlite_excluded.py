"""The SQLite hot store's excluded-event counters: per campaign, UTC event date and reason,
the events that were not counted (see ``HotStore.excluded``).

Written in the apply transaction, from the verdicts the apply just gave: an
effect below the group's committed position is a replay and adds nothing;
any other effect that was not new is a duplicate; a new one that is no
conversion adds one to its own reason.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Iterable, Sequence

from convtrack.store.hot.base import EXCLUDED_REASONS, Effect

EXCLUDED_SCHEMA = """
CREATE TABLE IF NOT EXISTS excluded_events (
    event_date TEXT NOT NULL, campaign_id TEXT NOT NULL, reason TEXT NOT NULL, n INTEGER NOT NULL,
    PRIMARY KEY (event_date, campaign_id, reason)
) WITHOUT ROWID;
"""


def replayed(conn: sqlite3.Connection, group: str, effects: Sequence[Effect]) -> list[bool]:
    """Per effect: applied before (below ``group``'s committed position on its partition).

    Read inside the apply transaction, before the apply moves the positions."""
    applied = dict(
        conn.execute("SELECT partition, next_offset FROM positions WHERE grp = ?", (group,))
    )
    return [e.offset < applied.get(e.partition, 0) for e in effects]


def add_excluded(
    conn: sqlite3.Connection,
    effects: Sequence[Effect],
    counted: Sequence[bool],
    replays: Sequence[bool],
) -> None:
    cells: Counter[tuple[str, str, str]] = Counter()
    for effect, new, replay in zip(effects, counted, replays, strict=True):
        if replay:
            continue
        reason = effect.excluded if new else "duplicate"
        if reason:
            cells[(effect.event_date, effect.campaign_id, reason)] += 1
    conn.executemany(
        "INSERT INTO excluded_events VALUES (?, ?, ?, ?)"
        " ON CONFLICT DO UPDATE SET n = n + excluded.n",
        [(*cell, n) for cell, n in cells.items()],
    )


def excluded_totals(rows: Iterable[tuple[object, object]]) -> dict[str, int]:
    """(reason, n) rows as every reason's total."""
    totals = dict.fromkeys(EXCLUDED_REASONS, 0)
    for reason, n in rows:
        if reason in totals:
            totals[str(reason)] += int(str(n))
    return totals


def excluded_query(campaign_id: str | None) -> str:
    where = "event_date = ?" + ("" if campaign_id is None else " AND campaign_id = ?")
    return f"SELECT reason, SUM(n) FROM excluded_events WHERE {where} GROUP BY reason"
