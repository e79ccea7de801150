"""The SQLite hot store's cache of sessions and touches answers what its tables hold."""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from convtrack.errors import StoreError
from convtrack.store.hot.base import Effect, SessionState, UserTouch
from convtrack.store.hot.sqlite import SqliteHotStore
from convtrack.store.hot.sqlite_states import StateCache
from tests.support.contract.hot_contract import T0, effect
from tests.support.sqlite_faults import injected_fault

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


@pytest.fixture
def hot(tmp_path: Path) -> Iterator[SqliteHotStore]:
    store = SqliteHotStore(tmp_path / "hot.db")
    yield store
    store.close()


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


def test_a_rolled_back_batch_leaves_no_state_behind(hot: SqliteHotStore, tmp_path: Path) -> None:
    path = tmp_path / "hot.db"
    hot.apply("g", [effect("a", offset=0)], {0: 1}, T0, [session("s", T0)], [touch("t", T0)])
    later = T0 + 60 * SECOND
    last_write = "BEFORE INSERT ON staged_rows WHEN NEW.tbl = 'user_touches'"
    with injected_fault(path, last_write), pytest.raises(StoreError, match="injected fault"):
        hot.apply(
            "g", [effect("b", offset=1)], {0: 2}, later,
            [session("s", later), session("new", later)], [touch("t", later)],
        )  # fmt: skip
    assert hot.sessions(["s", "new"]) == {"s": session("s", T0)}
    assert hot.user_touches(["t"]) == {"t": touch("t", T0)}


def test_expiry_forgets_cached_states_with_the_rows(hot: SqliteHotStore, tmp_path: Path) -> None:
    path = tmp_path / "hot.db"
    short = session("short", T0, ttl_us=10 * SECOND)
    hot.apply("g", [effect("a", offset=0)], {0: 1}, T0, [short, session("long", T0)], [])
    hot.expire(T0 + 20 * SECOND, max_rows=1000)
    assert set(hot.sessions(["short", "long"])) == {"long"}
    assert table_view(path, ["short", "long"])[0].keys() == {"long"}


def test_the_cache_keeps_the_newest_writes_up_to_its_limit() -> None:
    cache: StateCache[SessionState] = StateCache(limit=3)
    cache.written([session(k, T0) for k in "abcd"])
    cache.written([session("b", T0 + SECOND)])  # rewritten: now the newest
    cache.written([session("e", T0)])
    found, missing = cache.split("abcde")
    assert len(cache) == 3
    assert set(found) == {"b", "d", "e"} and sorted(missing) == ["a", "c"]
    assert found["b"].last_seen_us == T0 + SECOND


def test_states_past_the_cache_are_read_from_the_tables(hot: SqliteHotStore) -> None:
    hot._sessions = StateCache(limit=2)  # a small cache, to see past it
    states = [session(k, T0) for k in "abcde"]
    hot.apply("g", [effect("a", offset=0)], {0: 1}, T0, states, [])
    assert hot.sessions(list("abcde")) == {s.key: s for s in states}


def random_batches(seed: int, n: int) -> list[tuple[list[Effect], list[SessionState]]]:
    """Batches of effects with repeated ids (some past the window) and their sessions."""
    rng = random.Random(seed)
    batches = []
    offset = 0
    for b in range(n):
        now = T0 + b * 600 * SECOND
        effects = []
        for _ in range(rng.randrange(1, 12)):
            effects.append(effect(f"e{rng.randrange(60)}", at=now, offset=offset))
            offset += 1
        states = [session(f"s{rng.randrange(15)}", now) for _ in range(rng.randrange(0, 4))]
        batches.append((effects, states))
    return batches


@pytest.mark.parametrize("seed", [5, 10, 23])
def test_verdicts_and_reads_do_not_depend_on_when_staged_rows_merge(
    tmp_path: Path, seed: int
) -> None:
    """The same batches through a store that merges in short cycles of small stretches,
    one that never merges, and two reopened before every batch (their staged rows read
    back from the file, a cycle cut short each time): the same verdicts, sessions and
    remembered ids after every batch."""
    window = {"dedup_window_secs": 3600}
    small = {**window, "cycle_rows": 3, "min_stretch": 1}
    never = {**window, "cycle_rows": 10**9}
    kept = {
        "small": SqliteHotStore(tmp_path / "small.db", **small),
        "never": SqliteHotStore(tmp_path / "never.db", **never),
    }
    reopened = {"reopened-small": small, "reopened-never": never}
    answers: dict[str, list[object]] = {name: [] for name in [*kept, *reopened]}
    try:
        for index, (effects, states) in enumerate(random_batches(seed, 80)):
            positions = {0: effects[-1].offset + 1}
            now = effects[0].received_at_us
            opened = {name: SqliteHotStore(tmp_path / f"{name}.db", **kw)  # type: ignore[arg-type]
                      for name, kw in reopened.items()}  # fmt: skip
            try:
                for name, store in {**kept, **opened}.items():
                    result = store.apply("g", effects, positions, now, states, [])
                    if index % 20 == 19:
                        store.expire(now - 3600 * SECOND, max_rows=1000)
                    keys = [f"s{i}" for i in range(15)]
                    answers[name].append((result, store.sessions(keys), store.remembered()))
            finally:
                for store in opened.values():
                    store.close()
        first, *others = answers.values()
        assert all(other == first for other in others)
        assert sum(r.duplicates for r, _s, _n in answers["small"]) > 0  # the ids did repeat
    finally:
        for store in kept.values():
            store.close()


def test_a_failed_merge_keeps_the_staged_rows(tmp_path: Path) -> None:
    path = tmp_path / "hot.db"
    hot = SqliteHotStore(path, cycle_rows=2)
    try:
        hot.apply("g", [effect("a", offset=0), effect("b", offset=1)], {0: 2}, T0)
        with (
            injected_fault(path, "BEFORE INSERT ON dedup"),
            pytest.raises(StoreError, match="injected fault"),
        ):
            hot.apply("g", [effect("a", offset=2)], {0: 3}, T0 + SECOND)  # merges first
        assert hot.remembered() == 2
        again = hot.apply("g", [effect("a", offset=2), effect("c", offset=3)], {0: 4}, T0 + SECOND)
        assert again.counted == [False, True]
        merged = sqlite3.connect(path)
        stored = merged.execute("SELECT k FROM dedup ORDER BY k").fetchall()
        staged = merged.execute("SELECT COUNT(*) FROM staged_rows").fetchone()[0]
        merged.close()
        assert [k for (k,) in stored] == ["default\x00a", "default\x00b"]
        assert staged == 1  # the last batch's dedup rows, staged after the merge
        assert hot.remembered() == 3
    finally:
        hot.close()


def test_two_writers_on_one_file_see_each_others_staged_rows(tmp_path: Path) -> None:
    """Only a zombie processor makes a second writer, but dedup stays exact then too."""
    path = tmp_path / "hot.db"
    first = SqliteHotStore(path, cycle_rows=10**9)
    second = SqliteHotStore(path, cycle_rows=1)
    try:
        assert first.apply("g", [effect("a", offset=0)], {0: 1}, T0).counted == [True]
        assert second.apply("g", [effect("a", offset=1)], {0: 2}, T0).counted == [False]
        assert second.apply("g", [effect("b", offset=2)], {0: 3}, T0).counted == [True]  # merged
        later = [effect("b", offset=3), effect("c", offset=4)]
        assert first.apply("g", later, {0: 5}, T0).counted == [False, True]
        assert first.remembered() == 3  # the writer that wrote last counts what it staged
    finally:
        first.close()
        second.close()
