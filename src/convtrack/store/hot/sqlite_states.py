"""Sessions and last touches in the SQLite hot store, with a write-through cache.

The processor reads the sessions and touches of every batch's users before it
judges them, and writes them back with the batch (staged, then merged into
their tables: sqlite_staged.py). The store has one writer (the processor's
thread), so the states it committed last are the current ones:
``StateCache`` keeps the most recently written ones decoded in memory, and a
batch of returning users (the events of one visit, minutes apart) is read
without a query or a JSON decode. The cache changes only after the batch's
transaction commits, so a rolled-back batch leaves it as the files are; an
expired state is dropped from it when the tables forget it.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from typing import Generic, TypeVar

import msgspec

from convtrack.store.hot.base import SessionState, UserTouch
from convtrack.store.hot.sqlite_staged import Row, StagedTable, split_found

# Per kind; about 0.6 kB each (a state and its touch facts), so both kinds fill ~25 MB.
CACHED_STATES = 20_000

State = TypeVar("State", SessionState, UserTouch)

_encode = msgspec.json.encode
_decode = msgspec.json.decode


class StateCache(Generic[State]):
    """The last ``limit`` states written, by key; the oldest write goes first."""

    def __init__(self, limit: int = CACHED_STATES) -> None:
        self._limit = limit
        # Ordered by write; a plain dict would do, but deleting its oldest entries
        # leaves holes that every later ``next(iter(...))`` walks over again.
        self._states: OrderedDict[str, State] = OrderedDict()

    def __len__(self) -> int:
        return len(self._states)

    def split(self, keys: Iterable[str]) -> tuple[dict[str, State], list[str]]:
        """The cached states among ``keys``, and the keys to read from the table."""
        return split_found(self._states, keys)

    def written(self, states: Iterable[State]) -> None:
        cache = self._states
        for state in states:
            cache[state.key] = state
            cache.move_to_end(state.key)  # the newest write
        while len(cache) > self._limit:
            cache.popitem(last=False)

    def expired(self, watermark_us: int) -> None:
        """Forget what the tables forget: states that ended by ``watermark_us``."""
        ended = [k for k, s in self._states.items() if s.expires_at_us <= watermark_us]
        for key in ended:
            del self._states[key]

    def clear(self) -> None:
        self._states.clear()


def sessions_table(**cycles: int) -> StagedTable:
    return StagedTable(
        "sessions",
        ("key", "opened_at_us", "last_seen_us", "expires_at_us", "first_touch", "last_touch"),
        "ON CONFLICT DO UPDATE SET opened_at_us = excluded.opened_at_us,"
        " last_seen_us = excluded.last_seen_us, expires_at_us = excluded.expires_at_us,"
        " first_touch = excluded.first_touch, last_touch = excluded.last_touch",
        **cycles,
    )


def touches_table(**cycles: int) -> StagedTable:
    return StagedTable(
        "user_touches",
        ("key", "touch", "at_us", "expires_at_us"),
        "ON CONFLICT DO UPDATE SET touch = excluded.touch, at_us = excluded.at_us,"
        " expires_at_us = excluded.expires_at_us",
        **cycles,
    )


def session_row(s: SessionState) -> Row:
    return (
        s.key, s.opened_at_us, s.last_seen_us, s.expires_at_us,
        None if s.first_touch is None else _encode(s.first_touch).decode(),
        None if s.last_touch is None else _encode(s.last_touch).decode(),
    )  # fmt: skip


def touch_row(t: UserTouch) -> Row:
    return (t.key, _encode(t.touch).decode(), t.at_us, t.expires_at_us)


def session_of(row: Row) -> SessionState:
    return SessionState(
        key=row[0], opened_at_us=row[1], last_seen_us=row[2], expires_at_us=row[3],
        first_touch=None if row[4] is None else _decode(row[4]),
        last_touch=None if row[5] is None else _decode(row[5]),
    )  # fmt: skip


def touch_of(row: Row) -> UserTouch:
    return UserTouch(key=row[0], touch=_decode(row[1]), at_us=row[2], expires_at_us=row[3])
