"""The dead-letter port: one contract, run on SQLite and on Redis.

Two store objects on one home stand for two processes (two deliver processes of
one destination, a collector's admin API and a deliver process, a process taking
a crashed one's partition over)."""

from __future__ import annotations

import hashlib
import json
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from convtrack.deliver.base import Forwarded
from convtrack.deliver.payload import decode_payload, encode_payload
from convtrack.errors import StoreError, StoreUnavailable
from convtrack.store.deadletters.base import DeadLetterStore, Failure, store_path
from convtrack.store.deadletters.sqlite import SqliteDeadLetterStore
from convtrack.testing.events import forwarded
from tests.support.redis_fixtures import start_redis
from tests.support.sqlite_faults import locked, make_unreadable, short_busy_timeout

T0 = 1_796_000_000_000_000
FAILURE = Failure(last_status=400, last_answer="HTTP 400: bad", attempts=3,
                  first_attempt_at_us=T0, last_attempt_at_us=T0 + 5)  # fmt: skip

Opener = Callable[[], DeadLetterStore]


def event(n: int, partition: int = 0) -> Forwarded:
    nested = {"nested": {"currency": "EUR", "items": [n]}}
    return forwarded(f"e{n}", partition, 100 + n, value=n, properties=nested)


def prefix_for(path: Path) -> str:
    return "t" + hashlib.sha1(str(path).encode()).hexdigest()[:12]


def redis_store(url: str, prefix: str) -> DeadLetterStore:
    from convtrack.store.deadletters.redis import RedisDeadLetterStore

    return RedisDeadLetterStore(url, prefix=prefix)


@pytest.fixture(params=["sqlite", "redis"])
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    opened: list[DeadLetterStore] = []

    def open_store() -> DeadLetterStore:
        store: DeadLetterStore
        if request.param == "sqlite":
            store = SqliteDeadLetterStore(store_path(tmp_path))
        else:
            store = redis_store(request.getfixturevalue("redis_url"), prefix_for(tmp_path))
        opened.append(store)
        return store

    yield open_store
    for store in opened:
        store.close()


def ids_of(store: DeadLetterStore, destination: str | None = None) -> list[str]:
    return [d.event.event_id for d in store.items(destination, 1000)]


def test_rows_keep_the_event_and_the_last_answer_oldest_first(opener: Opener) -> None:
    store, other = opener(), opener()
    none = Failure(None, "timed out", 1, T0, T0)
    assert store.add("hook", [event(1), event(2)], FAILURE) == 0
    store.add_rows("meta", [(event(3), none)])
    store.add("hook", [event(4)], FAILURE)
    assert ids_of(other) == ["e1", "e2", "e3", "e4"] and ids_of(other, "hook") == ["e1", "e2", "e4"]
    assert (other.total(), other.total("hook"), other.total("meta"), other.total("x")) == (
        4,
        3,
        1,
        0,
    )
    first, third = other.items("hook", 1)[0], other.items("meta")[0]
    assert first.event == event(1) and first.destination == "hook" and not first.replay
    assert (first.last_status, first.last_answer, first.attempts, first.first_attempt_at_us,
            first.last_attempt_at_us) == (400, "HTTP 400: bad", 3, T0, T0 + 5)  # fmt: skip
    assert third.last_status is None and third.last_answer == "timed out"
    assert [d.id for d in other.items()] == sorted(d.id for d in other.items())
    assert len(other.items(limit=2)) == 2


def test_the_cap_drops_the_oldest_of_that_destination_and_says_how_many(opener: Opener) -> None:
    store = opener()
    store.add("other", [event(0)], FAILURE)
    assert store.add("hook", [event(n) for n in range(1, 4)], FAILURE, cap=3) == 0
    store.mark_replay("hook")
    assert store.add("hook", [event(n) for n in range(4, 6)], FAILURE, cap=3) == 2
    assert ids_of(store, "hook") == ["e3", "e4", "e5"] and ids_of(store, "other") == ["e0"]
    assert [d.event.event_id for d in store.replay_batch("hook", 10, T0)] == ["e3"]  # queued, kept


def test_a_replay_is_claimed_once_and_ends_removed_failed_or_given_back(opener: Opener) -> None:
    store, other = opener(), opener()
    store.add("hook", [event(n) for n in range(5)], FAILURE)
    store.add("meta", [event(9)], FAILURE)
    assert store.mark_replay("hook") == 5 and store.mark_replay("hook") == 5  # still once each
    assert all(d.replay for d in store.items("hook")) and not store.items("meta")[0].replay
    taken = store.replay_batch("hook", 2, T0)
    assert [d.event.event_id for d in taken] == ["e0", "e1"]
    rest = other.replay_batch("hook", 10, T0)
    assert [d.event.event_id for d in rest] == ["e2", "e3", "e4"]
    assert store.replay_batch("hook", 10, T0) == other.replay_batch("hook", 10, T0) == []
    store.remove([taken[0].id])
    later = Failure(500, "HTTP 500: again", 2, T0 + 10, T0 + 20)
    store.failed_again([taken[1].id], later)
    other.claim([rest[0].id], "replay in flight")
    other.unclaim(rest[1:])
    rows = {d.event.event_id: d for d in store.items("hook")}
    assert sorted(rows) == ["e1", "e2", "e3", "e4"]
    e1 = rows["e1"]
    assert (e1.last_status, e1.last_answer, e1.attempts, e1.last_attempt_at_us, e1.replay) == (
        500, "HTTP 500: again", 3 + 2, T0 + 20, False)  # fmt: skip
    assert e1.first_attempt_at_us == T0
    assert rows["e2"].last_answer == "replay in flight" and not rows["e2"].replay
    assert rows["e3"].replay and rows["e3"].last_answer == FAILURE.last_answer
    assert [d.event.event_id for d in store.replay_batch("hook", 10, T0)] == ["e3", "e4"]
    assert store.mark_replay() == 5  # every destination: 4 of hook, 1 of meta


def test_a_claim_never_settled_is_queued_again_when_its_lease_ends(opener: Opener) -> None:
    """A process that died mid-replay: its claim lapses and the replay resumes; a claim
    settled in time (delivered, failed, given back, claimed for good) never comes back."""
    store, successor = opener(), opener()
    store.add("hook", [event(n) for n in range(5)], FAILURE)
    store.mark_replay("hook")
    lease = 60.0
    taken = store.replay_batch("hook", 5, T0, lease)
    assert [d.event.event_id for d in taken] == [f"e{n}" for n in range(5)]
    store.remove([taken[0].id])
    store.failed_again([taken[1].id], FAILURE)
    store.claim([taken[2].id], "not resent: the platform cannot deduplicate")
    store.unclaim([taken[3]])  # queued again at once
    # e4 is left claimed: its process died. Before the lease ends nobody else gets it.
    just_before = T0 + int(lease * 1_000_000) - 1
    assert [d.event.event_id for d in successor.replay_batch("hook", 10, just_before)] == ["e3"]
    at_end = T0 + int(lease * 1_000_000)
    assert [d.event.event_id for d in successor.replay_batch("hook", 10, at_end)] == ["e4"]
    assert successor.replay_batch("hook", 10, at_end + 1) == []  # e3, e4 claimed anew...
    successor.remove([d.id for d in successor.items("hook") if d.event.event_id in ("e3", "e4")])
    assert successor.replay_batch("hook", 10, at_end + 10**12) == []  # ...and settled: gone
    assert sorted(d.event.event_id for d in store.items("hook")) == ["e1", "e2"]


def test_two_runners_racing_for_replays_never_share_a_row(opener: Opener) -> None:
    stores = [opener(), opener()]
    stores[0].add("hook", [event(n) for n in range(200)], FAILURE)
    stores[0].mark_replay("hook")
    taken: list[list[int]] = [[], []]
    start = threading.Barrier(2)

    def run(i: int) -> None:
        start.wait()
        while rows := stores[i].replay_batch("hook", 3, T0):
            taken[i] += [row.id for row in rows]

    threads = [threading.Thread(target=run, args=(i,)) for i in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not set(taken[0]) & set(taken[1])
    assert sorted(taken[0] + taken[1]) == sorted(d.id for d in stores[0].items("hook", 1000))


def test_changes_to_a_purged_row_do_not_bring_it_back(opener: Opener) -> None:
    store = opener()
    store.add("hook", [event(1), event(2)], FAILURE)
    store.add("meta", [event(3)], FAILURE)
    store.mark_replay()
    (row, _) = store.replay_batch("hook", 10, T0)
    assert store.purge("hook") == 2
    store.failed_again([row.id], FAILURE)
    store.claim([row.id], "note")
    store.unclaim([row])
    store.remove([row.id])
    assert store.total() == 1 and store.replay_batch("hook", 10, T0) == []
    assert store.purge() == 1 and store.total() == 0 and store.items() == []


def test_in_flight_markers_live_through_a_takeover(opener: Opener) -> None:
    """Marked by one process, found by the one that takes the partition over."""
    crashed, taker = opener(), opener()
    batch = [event(1, 0), event(2, 0), event(3, 1), event(4, 1)]
    crashed.mark_in_flight("ga4", batch)
    crashed.mark_in_flight("slack", [event(9, 0)])
    crashed.settle_in_flight("ga4", [batch[1], event(7, 0)])  # e7 has no marker: none made
    found = taker.in_flight("ga4")
    assert [(e.event_id, resolved) for e, resolved in found] == [
        ("e1", False), ("e2", True), ("e3", False), ("e4", False)]  # fmt: skip
    assert found[0][0] == batch[0]  # the whole event, payload included
    unresolved = [e for e, resolved in found if not resolved]
    assert taker.resolve_in_flight("ga4", unresolved[:1], FAILURE, cap=None) == 0
    taker.add_rows("ga4", [(e, FAILURE) for e in unresolved[1:]], in_flight=True)
    assert all(resolved for _, resolved in crashed.in_flight("ga4"))
    assert ids_of(crashed, "ga4") == ["e1", "e3", "e4"]
    taker.clear_in_flight("ga4", {0: 102, 1: 103})  # below e2 and below e3 are committed
    assert [e.event_id for e, _ in crashed.in_flight("ga4")] == ["e2", "e3", "e4"]
    crashed.mark_in_flight("ga4", [batch[1]])  # read and sent again: fate unknown again
    assert next((e.event_id, r) for e, r in taker.in_flight("ga4")) == ("e2", False)
    taker.clear_in_flight("ga4", {0: 1000, 1: 1000})
    assert taker.in_flight("ga4") == [] and [e.event_id for e, _ in taker.in_flight("slack")] == [
        "e9"
    ]


# A payload as the code before the typed ``Payload`` stored it: ``json.dumps`` of a dict
# (ASCII escapes, ", " and ": " separators), in the shape docs/http-api.md describes.
OLD_PAYLOAD: dict[str, Any] = {
    "event_id": "ord_1001", "event_name": "purchase", "source_event_name": "Purchase",
    "event_time": "2026-11-28T17:00:00.000Z", "event_time_us": 1_796_000_000_000_000,
    "received_at_us": 1_796_000_000_500_000, "value": 4999, "currency": "EUR",
    "amount": "49.99", "campaign_id": "spring", "campaign_source": "google",
    "campaign_medium": None, "device_type": "mobile", "country_code": "DE",
    "user_id": "user-8842", "session_id": None, "source": "default",
    "page_url": "https://shop.example/caf\u00e9", "referrer": None,
    "client_ip": "203.0.113.7", "user_agent": "Mozilla/5.0",
    "properties": {"order_id": 1001, "contents": [{"id": "sku-1", "price": 49.99}], "note": "é"},
    "user": {"email": "a" * 64, "country": "DE", "fbp": "fb.1.1796000000000.42"},
    "click_ids": {"gclid": "Cj0K"},
    "consent": {"ad_user_data": True, "ad_personalization": False, "analytics": True},
}  # fmt: skip


def test_rows_stored_as_the_old_payload_dict_still_decode(
    opener: Opener, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Dead letters and in-flight markers written before the payload was a struct (the
    ``json.dumps`` of its dict) read back as the struct, with the same JSON."""
    old_json = json.dumps(OLD_PAYLOAD)
    expected = decode_payload(old_json)
    assert msgspec.to_builtins(expected) == OLD_PAYLOAD
    assert json.loads(encode_payload(expected)) == OLD_PAYLOAD  # the same JSON, key order too
    assert list(json.loads(encode_payload(expected))) == list(OLD_PAYLOAD)
    writer, reader = opener(), opener()
    monkeypatch.setattr(sys.modules[type(writer).__module__], "encode_payload", lambda _: old_json)
    writer.add("hook", [forwarded("ord_1001", 0, 7)], FAILURE)
    writer.mark_in_flight("hook", [forwarded("ord_1001", 0, 7)])
    (row,) = reader.items("hook")
    assert row.event == Forwarded("ord_1001", 0, 7, expected)
    assert row.as_json()["event"] == OLD_PAYLOAD
    assert reader.in_flight("hook") == [(Forwarded("ord_1001", 0, 7, expected), False)]


def test_redis_going_away_is_a_store_error_not_a_hang(tmp_path: Path) -> None:
    server = start_redis(tmp_path / "redis")
    store = redis_store(server.url, "down")
    try:
        store.add("hook", [event(1)], FAILURE)
        server.stop()
        calls: list[Callable[[], object]] = [
            lambda: store.add("hook", [event(2)], FAILURE),
            store.total,
            store.items,
            lambda: store.mark_replay("hook"),
            lambda: store.replay_batch("hook", 10, T0),
            lambda: store.remove([1]),
            lambda: store.mark_in_flight("hook", [event(3)]),
            lambda: store.in_flight("hook"),
            lambda: store.clear_in_flight("hook", {0: 5}),
        ]
        for call in calls:
            with pytest.raises(StoreError):
                call()
    finally:
        store.close()
        server.stop()


def test_the_dlq_commands_reach_the_shared_store(redis_url: str, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from convtrack.cli.main import cli

    prefix = prefix_for(tmp_path)
    store = redis_store(redis_url, prefix)
    try:
        store.add("hook", [event(1), event(2)], FAILURE)
        env = {"CONVTRACK_HOT_KIND": "redis", "CONVTRACK_HOT_REDIS_URL": redis_url,
               "CONVTRACK_HOT_REDIS_PREFIX": prefix}  # fmt: skip
        args = ["--data-dir", str(tmp_path / "elsewhere")]  # another machine's data dir
        runner = CliRunner()
        listed = runner.invoke(cli, ["dlq", "list", *args, "--format", "json"], env=env)
        assert listed.exit_code == 0, listed.output
        assert '"event_id":"e1"' in listed.output and '"event_id":"e2"' in listed.output
        replayed = runner.invoke(cli, ["dlq", "replay", *args, "--destination", "hook"], env=env)
        assert replayed.exit_code == 0 and "replayed 2" in replayed.output
        assert [d.event.event_id for d in store.replay_batch("hook", 10, T0)] == ["e1", "e2"]
        down = {**env, "CONVTRACK_HOT_REDIS_URL": "redis://127.0.0.1:9/0"}
        failed = runner.invoke(cli, ["dlq", "list", *args], env=down)
        # a StoreError, which `main` prints as a one-line error (exit 1)
        assert failed.exit_code != 0 and isinstance(failed.exception, StoreError)
    finally:
        store.close()


def test_sqlite_failures_are_store_errors(tmp_path: Path) -> None:
    """A locked file refuses writes for now (StoreUnavailable); an unreadable one fails
    every call with a StoreError: never sqlite3's own errors."""
    path = store_path(tmp_path)
    store = SqliteDeadLetterStore(path)
    short_busy_timeout(store._conn)
    try:
        store.add("hook", [event(1)], FAILURE)
        with locked(path):
            with pytest.raises(StoreUnavailable, match="dead letters"):
                store.add("hook", [event(2)], FAILURE)
            assert store.total("hook") == 1  # readers go on beside a writer (WAL)
        make_unreadable(path)
        calls: list[Callable[[], object]] = [
            lambda: store.add("hook", [event(3)], FAILURE),
            store.total,
            store.items,
            lambda: store.mark_replay("hook"),
            lambda: store.replay_batch("hook", 10, T0),
            lambda: store.remove([1]),
            lambda: store.mark_in_flight("hook", [event(3)]),
            lambda: store.in_flight("hook"),
            lambda: store.clear_in_flight("hook", {0: 5}),
        ]
        for call in calls:
            with pytest.raises(StoreError, match="dead letters"):
                call()
    finally:
        store.close()
