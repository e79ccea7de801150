"""The SQLite hot store's cache of sessions and touches answers what its tables hold."""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path

import pytest

from convtrack.errors import StoreError
from convtrack.store.hot.base import SessionState, UserTouch
from convtrack.store.hot.sqlite import SqliteHotStore
from convtrack.store.hot.sqlite_states import StateCache
from tests.support.contract.hot_contract import T0, effect

SECOND = 1_000_000


def session(key: str, at_us: int, ttl_us: int = 1800 * SECOND) -> SessionState:
    touch = {"source": "google", "medium": "cpc", "at_us": at_us}
    return SessionState(
        key=key, opened_at_us=T0, last_seen_us=at_us, expires_at_us=at_us + ttl_us,
        first_touch=touch, last_touch=None,
    )  # fmt: skip


def touch(key: str, at_us: int) -> UserTouch:
    facts = {"source": "meta", "medium": "paid", "at_us": at_us}
    return UserTouch(key=key, touch=facts, at_us=at_us, expires_at_us=at_us + 3600 * SECOND)


def table_view(path: Path, keys: list[str]) -> tuple[dict[str, SessionState], dict[str, UserTouch]]:
    """What a store that has cached nothing reads from the same file."""
    fresh = SqliteHotStore(path)
    try:
        return fresh.sessions(keys), fresh.user_touches(keys)
    finally:
        fresh.close()


def test_reads_match_the_tables_through_random_batches(tmp_path: Path) -> None:
    path = tmp_path / "hot.db"
    hot = SqliteHotStore(path)
    rng = random.Random(7)
    keys = [f"default\x00u\x00u{i}" for i in range(40)]
    try:
        for batch in range(30):
            now = T0 + batch * SECOND
            chosen = rng.sample(keys, 8)
            hot.apply(
                "g", [effect(f"e{batch}", offset=batch)], {0: batch + 1}, now,
                [session(k, now + rng.randrange(SECOND)) for k in chosen[:5]],
                [touch(k, now) for k in chosen[3:]],
            )  # fmt: skip
            if batch % 10 == 9:
                hot.expire(now - 5 * SECOND, max_rows=1000)
            asked = rng.sample(keys, 20)
            assert (hot.sessions(asked), hot.user_touches(asked)) == table_view(path, asked)
    finally:
        hot.close()


def test_a_rolled_back_batch_leaves_no_state_behind(tmp_path: Path) -> None:
    path = tmp_path / "hot.db"
    hot = SqliteHotStore(path)
    try:
        hot.apply("g", [effect("a", offset=0)], {0: 1}, T0, [session("s", T0)], [touch("t", T0)])
        fault = sqlite3.connect(path)
        fault.execute(
            "CREATE TRIGGER injected BEFORE UPDATE ON user_touches"
            " BEGIN SELECT RAISE(ABORT, 'injected fault'); END"
        )
        fault.commit()
        later = T0 + 60 * SECOND
        with pytest.raises(StoreError, match="injected fault"):
            hot.apply(
                "g", [effect("b", offset=1)], {0: 2}, later,
                [session("s", later), session("new", later)], [touch("t", later)],
            )  # fmt: skip
        fault.close()
        assert hot.sessions(["s", "new"]) == {"s": session("s", T0)}
        assert hot.user_touches(["t"]) == {"t": touch("t", T0)}
    finally:
        hot.close()


def test_expiry_forgets_cached_states_with_the_rows(tmp_path: Path) -> None:
    path = tmp_path / "hot.db"
    hot = SqliteHotStore(path)
    try:
        short = session("short", T0, ttl_us=10 * SECOND)
        hot.apply("g", [effect("a", offset=0)], {0: 1}, T0, [short, session("long", T0)], [])
        hot.expire(T0 + 20 * SECOND, max_rows=1000)
        assert set(hot.sessions(["short", "long"])) == {"long"}
        assert table_view(path, ["short", "long"])[0].keys() == {"long"}
    finally:
        hot.close()


def test_the_cache_keeps_the_newest_writes_up_to_its_limit() -> None:
    cache: StateCache[SessionState] = StateCache(limit=3)
    cache.written([session(k, T0) for k in "abcd"])
    cache.written([session("b", T0 + SECOND)])  # rewritten: now the newest
    cache.written([session("e", T0)])
    found, missing = cache.split("abcde")
    assert len(cache) == 3
    assert set(found) == {"b", "d", "e"} and sorted(missing) == ["a", "c"]
    assert found["b"].last_seen_us == T0 + SECOND


def test_states_past_the_cache_are_read_from_the_tables(tmp_path: Path) -> None:
    path = tmp_path / "hot.db"
    hot = SqliteHotStore(path)
    try:
        hot._sessions = StateCache(limit=2)  # a small cache, to see past it
        states = [session(k, T0) for k in "abcde"]
        hot.apply("g", [effect("a", offset=0)], {0: 1}, T0, states, [])
        assert hot.sessions(list("abcde")) == {s.key: s for s in states}
    finally:
        hot.close()
