"""Sessions and last touches in the SQLite hot store, with a write-through cache.

The processor reads the sessions and touches of every batch's users before it
judges them, and writes them back with the batch. The store has one writer
(the processor's thread), so the rows it committed last are what the tables
hold: ``StateCache`` keeps the most recently written ones in memory, and a
batch of returning users (the events of one visit, minutes apart) is read
without a query or a JSON decode. The cache changes only after the batch's
transaction commits, so a rolled-back batch leaves it as the tables are; an
expired row is dropped from it when the tables forget it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Generic, TypeVar

import msgspec

from convtrack.store.hot.base import SessionState, UserTouch
from convtrack.store.hot.sqlite_rows import chunks

# Per kind; about 0.6 kB each (a state and its touch facts), so both kinds fill ~25 MB.
CACHED_STATES = 20_000

State = TypeVar("State", SessionState, UserTouch)
Rows = Callable[[str, Sequence[str]], list[tuple[Any, ...]]]

_encode = msgspec.json.encode
_decode = msgspec.json.decode


class StateCache(Generic[State]):
    """The last ``limit`` states written, by key; the oldest write goes first."""

    def __init__(self, limit: int = CACHED_STATES) -> None:
        self._limit = limit
        self._states: dict[str, State] = {}

    def __len__(self) -> int:
        return len(self._states)

    def split(self, keys: Iterable[str]) -> tuple[dict[str, State], list[str]]:
        """The cached states among ``keys``, and the keys to read from the table."""
        found: dict[str, State] = {}
        missing: list[str] = []
        for key in set(keys):
            state = self._states.get(key)
            if state is None:
                missing.append(key)
            else:
                found[key] = state
        return found, missing

    def written(self, states: Iterable[State]) -> None:
        cache = self._states
        for state in states:
            cache.pop(state.key, None)  # to the end: the newest write
            cache[state.key] = state
        while len(cache) > self._limit:
            del cache[next(iter(cache))]

    def expired(self, watermark_us: int) -> None:
        """Forget what the tables forget: states that ended by ``watermark_us``."""
        ended = [k for k, s in self._states.items() if s.expires_at_us <= watermark_us]
        for key in ended:
            del self._states[key]

    def clear(self) -> None:
        self._states.clear()


def write_states(
    conn: sqlite3.Connection, sessions: Sequence[SessionState], touches: Sequence[UserTouch]
) -> None:
    """The batch's sessions and touches, in the caller's transaction (an upsert updates
    the row in place, where a replace deletes it and inserts it again)."""
    conn.executemany(
        "INSERT INTO sessions VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO UPDATE SET"
        " opened_at_us = excluded.opened_at_us, last_seen_us = excluded.last_seen_us,"
        " expires_at_us = excluded.expires_at_us, first_touch = excluded.first_touch,"
        " last_touch = excluded.last_touch",
        [
            (s.key, s.opened_at_us, s.last_seen_us, s.expires_at_us,
             None if s.first_touch is None else _encode(s.first_touch).decode(),
             None if s.last_touch is None else _encode(s.last_touch).decode())
            for s in sessions
        ],
    )  # fmt: skip
    conn.executemany(
        "INSERT INTO user_touches VALUES (?, ?, ?, ?) ON CONFLICT DO UPDATE SET"
        " touch = excluded.touch, at_us = excluded.at_us, expires_at_us = excluded.expires_at_us",
        [(t.key, _encode(t.touch).decode(), t.at_us, t.expires_at_us) for t in touches],
    )


def read_sessions(rows: Rows, keys: Sequence[str]) -> dict[str, SessionState]:
    found: dict[str, SessionState] = {}
    for chunk in chunks(keys):
        marks = ",".join("?" * len(chunk))
        for row in rows(
            f"SELECT key, opened_at_us, last_seen_us, expires_at_us, first_touch, last_touch"
            f" FROM sessions WHERE key IN ({marks})",
            chunk,
        ):
            found[row[0]] = SessionState(
                key=row[0], opened_at_us=row[1], last_seen_us=row[2], expires_at_us=row[3],
                first_touch=None if row[4] is None else _decode(row[4]),
                last_touch=None if row[5] is None else _decode(row[5]),
            )  # fmt: skip
    return found


def read_touches(rows: Rows, keys: Sequence[str]) -> dict[str, UserTouch]:
    found: dict[str, UserTouch] = {}
    for chunk in chunks(keys):
        marks = ",".join("?" * len(chunk))
        for row in rows(
            f"SELECT key, touch, at_us, expires_at_us FROM user_touches WHERE key IN ({marks})",
            chunk,
        ):
            found[row[0]] = UserTouch(
                key=row[0], touch=_decode(row[1]), at_us=row[2], expires_at_us=row[3]
            )
    return found
