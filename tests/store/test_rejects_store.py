"""The rejects port: one contract, run on SQLite and on Redis, plus what only Redis adds
(many collectors and copiers on one store, Redis going away)."""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from convtrack.clock import ManualClock
from convtrack.errors import StoreError, StoreUnavailable
from convtrack.observe.metrics import Metrics
from convtrack.runtime.backends import open_cold_store
from convtrack.store.cold.query import connect
from convtrack.store.cold.tables import RejectsSource
from convtrack.store.cold.writer import TableWriter
from convtrack.store.rejects.base import IngestReject, RejectStore, StoredReject
from convtrack.store.rejects.sqlite import SqliteRejectStore
from tests.support.redis_fixtures import start_redis
from tests.support.sqlite_faults import locked, make_unreadable, short_busy_timeout

T0 = 1_796_000_000_000_000
MARK = "…[truncated]"

Opener = Callable[..., RejectStore]


def reject(n: int, codes: list[str] | None = None, body: str | None = None) -> IngestReject:
    return IngestReject(
        received_at_us=T0 + n * 1_000_000, route="/v1/events", status=400,
        codes=codes or ["currency_not_uppercase"], body=body or f'{{"event_id":"e{n}"}}',
        source="web", key_role="write", key_id="k1", event_id=f"e{n}", index=n % 3,
    )  # fmt: skip


def add(store: RejectStore, rejects: list[IngestReject]) -> None:
    asyncio.run(store.add(rejects))


def prefix_for(path: Path) -> str:
    return "t" + hashlib.sha1(str(path).encode()).hexdigest()[:12]


@pytest.fixture(params=["sqlite", "redis"])
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    """Opens stores that share one home: the same SQLite file, or the same Redis prefix."""
    opened: list[RejectStore] = []

    def open_store(max_rows: int = 1000, max_body_bytes: int = 10_000,
                   on_drop: Callable[[int], None] | None = None) -> RejectStore:  # fmt: skip
        store: RejectStore
        if request.param == "sqlite":
            store = SqliteRejectStore(tmp_path / "rejects.db", max_rows=max_rows,
                                      max_body_bytes=max_body_bytes, on_drop=on_drop)  # fmt: skip
        else:
            from convtrack.store.rejects.redis import RedisRejectStore

            url = request.getfixturevalue("redis_url")
            store = RedisRejectStore(url, prefix=prefix_for(tmp_path), max_rows=max_rows,
                                     max_body_bytes=max_body_bytes, on_drop=on_drop)  # fmt: skip
        opened.append(store)
        return store

    yield open_store
    for store in opened:
        store.close()


def event_ids(rows: list[StoredReject]) -> list[str | None]:
    return [r.event_id for r in rows]


def test_a_reject_is_kept_whole_and_pages_walk_newest_first(opener: Opener) -> None:
    store = opener()
    add(store, [reject(n) for n in range(7)])
    first = store.page(code=None, limit=3, before_id=None)
    assert first.total == 7 and event_ids(first.items) == ["e6", "e5", "e4"]
    assert first.next_cursor == first.items[-1].id
    seen = list(first.items)
    cursor = first.next_cursor
    while cursor is not None:
        page = store.page(code=None, limit=3, before_id=cursor)
        assert page.total == 7
        seen += page.items
        cursor = page.next_cursor
    assert event_ids(seen) == [f"e{n}" for n in reversed(range(7))]
    ids = [r.id for r in seen]
    assert ids == sorted(ids, reverse=True) and len(set(ids)) == 7
    kept = seen[-1]
    want = reject(0)
    assert (kept.received_at_us, kept.route, kept.status, kept.codes, kept.body, kept.source,
            kept.key_role, kept.key_id, kept.index) == (
        want.received_at_us, want.route, want.status, want.codes, want.body, want.source,
        want.key_role, want.key_id, want.index)  # fmt: skip
    at = datetime.fromtimestamp(want.received_at_us / 1e6, UTC)
    assert kept.received_at == at.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def test_the_code_filter_uses_only_rows_with_that_code_and_pages_by_it(opener: Opener) -> None:
    store = opener()
    rows = [reject(n, codes=["rate_limited"] if n % 3 == 0 else ["a", "b", "a"]) for n in range(10)]
    add(store, rows)
    limited = [f"e{n}" for n in reversed(range(10)) if n % 3 == 0]
    page = store.page(code="rate_limited", limit=2, before_id=None)
    assert page.total == len(limited) and event_ids(page.items) == limited[:2]
    rest = store.page(code="rate_limited", limit=2, before_id=page.next_cursor)
    assert event_ids(rest.items) == limited[2:4] and rest.next_cursor is not None
    last = store.page(code="rate_limited", limit=2, before_id=rest.next_cursor)
    assert last.items == [] and last.next_cursor is None
    both = store.page(code="b", limit=100, before_id=None)
    assert both.total == 10 - len(limited) and both.items[0].codes == ["a", "b", "a"]
    assert store.page(code="nope", limit=5, before_id=None).total == 0


def test_a_long_body_is_cut_and_marked(opener: Opener) -> None:
    store = opener(max_body_bytes=10)
    add(store, [reject(1, body="x" * 11), reject(2, body="y" * 10)])
    bodies = {r.event_id: r.body for r in store.since(0, 10)}
    assert bodies == {"e1": "x" * 10 + MARK, "e2": "y" * 10}


def test_the_body_limit_counts_bytes_and_never_splits_a_character(opener: Opener) -> None:
    store = opener(max_body_bytes=10)
    # 3 + 8 bytes: the 4-byte character would straddle the limit and is left out whole.
    add(store, [reject(1, body="abc" + "😀😀"), reject(2, body="é" * 5)])
    bodies = {r.event_id: r.body for r in store.since(0, 10)}
    assert bodies == {"e1": "abc😀" + MARK, "e2": "é" * 5}  # é is 2 bytes: 10 fit
    assert len(bodies["e1"].removesuffix(MARK).encode()) <= 10


def test_the_cap_drops_the_oldest_and_counts_them(opener: Opener) -> None:
    drops: list[int] = []
    store = opener(max_rows=5, on_drop=drops.append)
    add(store, [reject(n, codes=["old"] if n < 3 else ["new"]) for n in range(4)])
    add(store, [reject(n, codes=["new"]) for n in range(4, 8)])
    page = store.page(code=None, limit=100, before_id=None)
    assert page.total == 5 and event_ids(page.items) == [f"e{n}" for n in range(7, 2, -1)]
    assert sum(drops) == 3 and store.dropped == 3
    assert store.page(code="old", limit=100, before_id=None).total == 0  # indexes trimmed
    assert store.page(code="new", limit=100, before_id=None).total == 5


def test_since_is_oldest_first_above_an_id(opener: Opener) -> None:
    store = opener()
    add(store, [reject(n) for n in range(6)])
    rows = store.since(0, 100)
    assert event_ids(rows) == [f"e{n}" for n in range(6)]
    ids = [r.id for r in rows]
    assert event_ids(store.since(ids[1], 2)) == ["e2", "e3"]
    assert store.since(ids[-1], 100) == []


def test_concurrent_writers_get_distinct_ids_a_reader_sees_in_order(opener: Opener) -> None:
    """Two stores on one home (two collectors): every id once, and a reader polling by id
    never sees a later id before an earlier one (it would skip the earlier one for good)."""
    writers = [opener(max_rows=100_000), opener(max_rows=100_000)]
    reader = opener(max_rows=100_000)
    batches, size = 40, 5
    errors: list[BaseException] = []

    def write(w: int) -> None:
        try:
            for b in range(batches):
                add(writers[w], [reject(w * 10_000 + b * size + i) for i in range(size)])
        except BaseException as exc:
            errors.append(exc)
            raise

    threads = [threading.Thread(target=write, args=(w,)) for w in (0, 1)]
    for thread in threads:
        thread.start()
    copied: list[StoredReject] = []
    after = 0
    while any(t.is_alive() for t in threads) or len(copied) < 2 * batches * size:
        rows = reader.since(after, 7)
        for row in rows:
            assert row.id == after + 1, "an id was seen before a smaller one was written"
            after = row.id
        copied += rows
        if errors:
            break
    for thread in threads:
        thread.join()
    assert not errors
    expected = {f"e{w * 10_000 + n}" for w in (0, 1) for n in range(batches * size)}
    assert sorted(event_ids(copied)) == sorted(expected)  # type: ignore[type-var]


# -- Redis only ------------------------------------------------------------------------


def redis_store(url: str, prefix: str, **kw: int) -> RejectStore:
    from convtrack.store.rejects.redis import RedisRejectStore

    return RedisRejectStore(url, prefix=prefix, max_rows=kw.get("max_rows", 1000),
                            max_body_bytes=kw.get("max_body_bytes", 1000))  # fmt: skip


def test_the_cap_holds_across_collectors_and_every_drop_is_counted(
    redis_url: str, tmp_path: Path
) -> None:
    prefix = prefix_for(tmp_path)
    stores = [redis_store(redis_url, prefix, max_rows=10) for _ in range(2)]
    try:
        for n in range(30):
            add(stores[n % 2], [reject(n)])
        page = stores[0].page(code=None, limit=100, before_id=None)
        assert page.total == 10 and event_ids(page.items) == [f"e{n}" for n in range(29, 19, -1)]
        assert stores[0].dropped == stores[1].dropped == 20
    finally:
        for store in stores:
            store.close()


def test_two_store_writers_copy_a_shared_store_to_one_lake_exactly_once(
    redis_url: str, tmp_path: Path
) -> None:
    """Two store roles on two machines copy one Redis reject store: the lake's
    conditional manifest commit makes the loser of each race seek on."""
    prefix = prefix_for(tmp_path)
    collector = redis_store(redis_url, prefix, max_rows=100_000)
    copiers = [redis_store(redis_url, prefix) for _ in range(2)]
    clock = ManualClock(start_us=T0)
    writers = [
        TableWriter(
            lake=open_cold_store(str(tmp_path / "lake")),
            source=RejectsSource(copier),
            clock=clock,
            metrics=Metrics(),
            flush_interval_secs=3600,
            flush_max_rows=max_rows,
        )
        for copier, max_rows in zip(copiers, (7, 11), strict=True)
    ]
    try:
        total = 0
        for round_ in range(6):
            add(collector, [reject(round_ * 100 + i) for i in range(13)])
            total += 13
            for writer in writers if round_ % 2 else reversed(writers):
                while writer.poll_once(timeout_secs=0.0):
                    pass
        for writer in writers:
            while writer.poll_once(timeout_secs=0.0):
                pass
            writer.flush()
        con = connect(open_cold_store(str(tmp_path / "lake")))
        try:
            copied = con.execute("select reject_id, event_id from rejects").fetchall()
        finally:
            con.close()
        ids = [r.id for r in collector.since(0, 10_000)]
        assert len(ids) == total
        assert sorted(reject_id for reject_id, _ in copied) == ids  # each once, none missing
        assert sum(w.races_lost for w in writers) > 0  # the race was run, and lost by one
    finally:
        for store in (collector, *copiers):
            store.close()


def test_redis_going_away_is_a_store_error_not_a_hang(tmp_path: Path) -> None:
    server = start_redis(tmp_path / "redis")
    store = redis_store(server.url, "down")
    try:
        add(store, [reject(1)])
        server.stop()
        with pytest.raises(StoreError):
            store.page(code=None, limit=10, before_id=None)
        with pytest.raises(StoreError):
            store.since(0, 10)
        with pytest.raises(StoreError):
            add(store, [reject(2)])
        with pytest.raises(StoreError):
            _ = store.dropped
    finally:
        store.close()
        server.stop()


def test_one_request_with_more_rejects_than_a_script_takes(redis_url: str, tmp_path: Path) -> None:
    from convtrack.store.rejects.redis import MAX_BATCH

    store = redis_store(redis_url, prefix_for(tmp_path), max_rows=10 * MAX_BATCH)
    try:
        count = 2 * MAX_BATCH + 3
        add(store, [reject(n, codes=["a", "b", "c"]) for n in range(count)])
        assert store.page(code="b", limit=1, before_id=None).total == count
        ids = [r.id for r in store.since(0, count)]
        assert ids == list(range(ids[0], ids[0] + count))
    finally:
        store.close()


def test_a_locked_sqlite_store_refuses_rejects_as_a_store_then_takes_them(tmp_path: Path) -> None:
    """The rejects store's errors are a store's (not the log's LogUnavailable)."""
    path = tmp_path / "rejects.db"
    store = SqliteRejectStore(path, max_rows=100, max_body_bytes=1000)
    short_busy_timeout(store._conn)
    try:
        with locked(path), pytest.raises(StoreUnavailable, match="rejects store"):
            add(store, [reject(1)])
        add(store, [reject(2)])
        assert event_ids(store.page(code=None, limit=10, before_id=None).items) == ["e2"]
    finally:
        store.close()


def test_an_unreadable_sqlite_store_fails_with_store_errors(tmp_path: Path) -> None:
    path = tmp_path / "rejects.db"
    store = SqliteRejectStore(path, max_rows=100, max_body_bytes=1000)
    try:
        add(store, [reject(1)])
        make_unreadable(path)
        with pytest.raises(StoreError, match="rejects store"):
            store.page(code=None, limit=10, before_id=None)
        with pytest.raises(StoreError, match="rejects store"):
            store.since(0, 10)
        with pytest.raises(StoreUnavailable):
            add(store, [reject(2)])
    finally:
        store.close()
