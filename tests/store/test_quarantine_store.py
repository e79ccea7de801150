"""The quarantine store's contract, on SQLite and on Redis; and ``convtrack quarantine``."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from convtrack.cli.main import cli
from convtrack.errors import LogUnavailable, StoreError, StoreUnavailable, is_transient
from convtrack.process.base import STAGES
from convtrack.store.quarantine.base import QUARANTINE_STAGES, Quarantined, QuarantineStore
from convtrack.store.quarantine.sqlite import SqliteQuarantineStore

NOW = 1_796_000_000_000_000


def event(offset: int, stage: str = "hot_apply", scope: str = "") -> Quarantined:
    payload = json.dumps({"event_id": f"e{offset}"}).encode()
    return Quarantined(stage=stage, scope=scope, log="events", partition=0, offset=offset,
                       key="k", payload=payload, event_id=f"e{offset}", error="boom",
                       at_us=NOW)  # fmt: skip


@pytest.fixture(params=["sqlite", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[QuarantineStore]:
    opened: QuarantineStore
    if request.param == "redis":
        from convtrack.store.quarantine.redis import RedisQuarantineStore

        url = request.getfixturevalue("redis_url")
        opened = RedisQuarantineStore(url, prefix=uuid.uuid4().hex)
    else:
        opened = SqliteQuarantineStore(tmp_path / "q.db")
    yield opened
    opened.close()


def test_add_is_idempotent_per_position_and_pages_oldest_first(store: QuarantineStore) -> None:
    assert store.add([event(1), event(2), event(3, "cold", "events")]) == 3
    assert store.add([event(1), event(4)]) == 1  # a stage that crashed quarantines e1 again
    assert store.total() == 4 and store.total("hot_apply") == 3 and store.total("cold") == 1
    first = store.items(limit=2)
    assert [r.event.event_id for r in first] == ["e1", "e2"]
    rest = store.items(limit=10, after_id=first[-1].id)
    assert [r.event.event_id for r in rest] == ["e3", "e4"]
    assert [r.event.event_id for r in store.items("cold")] == ["e3"]
    row = first[0]
    assert (row.attempts, row.replay, row.event) == (1, False, event(1))
    shown = row.as_json()
    assert shown["payload"] == {"event_id": "e1"} and shown["payload_base64"] is None


def test_claims_are_leased_removed_or_kept_with_the_new_error(store: QuarantineStore) -> None:
    store.add([event(1), event(2), event(3, "cold", "events")])
    assert store.claim(STAGES, "", 10, NOW) == []  # nothing queued
    assert store.mark_replay("hot_apply") == 2
    assert store.mark_replay("hot_apply") == 0  # already queued
    claimed = store.claim(STAGES, "", 10, NOW, lease_secs=60)
    assert [r.event.event_id for r in claimed] == ["e1", "e2"]
    assert store.claim(STAGES, "", 10, NOW + 1) == []  # leased to the first caller
    assert store.claim(["cold"], "events", 10, NOW) == []  # not queued
    store.remove([claimed[0].id])
    # The second claim's process died: after the lease it is taken again.
    (again,) = store.claim(STAGES, "", 10, NOW + 61_000_000)
    assert again.event.event_id == "e2"
    store.failed_again(again.id, "still boom", NOW + 62_000_000)
    (kept,) = store.items("hot_apply")
    assert (kept.attempts, kept.replay, kept.event.error) == (2, False, "still boom")
    assert store.total() == 2


def test_settled_claims_are_not_claimed_again_until_queued_and_given_back_at_once(
    store: QuarantineStore,
) -> None:
    store.add([event(1, "deliver", "ga4"), event(2, "deliver", "ga4"), event(3, "deliver", "ga4")])
    assert store.mark_replay("deliver") == 3
    one, two, three = store.claim(["deliver"], "ga4", 10, NOW, lease_secs=60)
    # Settled before sending (a destination that cannot deduplicate): unqueued, noted.
    assert store.settle_claims([one.id, two.id, three.id], "replay in flight") == [
        one.id, two.id, three.id,
    ]  # fmt: skip
    assert store.settle_claims([one.id], "replay in flight") == []  # settled already
    kept = {r.id: r for r in store.items("deliver")}
    assert not kept[one.id].replay and kept[one.id].attempts == 1
    assert (
        kept[one.id].event.error.startswith("replay in flight")
        and "boom" in kept[one.id].event.error
    )
    # A lapsed lease does not bring them back (the request may have reached the platform).
    assert store.claim(["deliver"], "ga4", 10, NOW + 3600_000_000) == []
    # Not sent after all (a pause, a stop): given back, claimable at once, error as before.
    store.give_back([two.id])
    (back,) = store.claim(["deliver"], "ga4", 10, NOW + 1)
    assert back.id == two.id and back.event.error == "boom"
    # An operator queues the rest again: claimable, the note gone.
    assert store.mark_replay("deliver") == 2
    again = store.claim(["deliver"], "ga4", 10, NOW + 2)
    assert [r.id for r in again] == [one.id, three.id]
    assert [r.event.error for r in store.items("deliver")] == ["boom"] * 3
    # Settled, then delivered: removed with its note.
    assert store.settle_claims([one.id], "replay in flight") == [one.id]
    store.remove([one.id])
    assert [r.id for r in store.items("deliver")] == [two.id, three.id]
    store.failed_again(three.id, "still boom", NOW + 3)
    assert store.items("deliver")[1].event.error == "still boom"


def test_a_quarantine_made_before_notes_gains_the_column(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "old.db"
    old = sqlite3.connect(path)
    old.execute(
        "CREATE TABLE quarantine (id INTEGER PRIMARY KEY, stage TEXT NOT NULL, scope TEXT NOT"
        " NULL, log TEXT NOT NULL, part INTEGER NOT NULL, off INTEGER NOT NULL, key TEXT NOT"
        " NULL, payload BLOB NOT NULL, event_id TEXT, error TEXT NOT NULL, at_us INTEGER NOT"
        " NULL, attempts INTEGER NOT NULL DEFAULT 1, queued INTEGER NOT NULL DEFAULT 0,"
        " lease_until_us INTEGER, UNIQUE (stage, scope, log, part, off))"
    )
    old.commit()
    old.close()
    opened = SqliteQuarantineStore(path)
    try:
        opened.add([event(1)])
        (row,) = opened.items()
        assert row.event == event(1)
    finally:
        opened.close()


def test_the_stage_names_match_the_processor_steps() -> None:
    assert set(STAGES) < set(QUARANTINE_STAGES)


def test_availability_errors_are_transient_and_the_rest_is_not() -> None:
    import sqlite3

    assert is_transient(StoreUnavailable("redis down"))
    assert is_transient(LogUnavailable("disk full"))
    assert is_transient(OSError(28, "No space left on device"))
    full = sqlite3.OperationalError("database or disk is full")
    full.sqlite_errorcode = 13  # type: ignore[attr-defined]
    try:
        raise StoreError("hot store apply failed") from full
    except StoreError as exc:
        assert is_transient(exc)
    assert not is_transient(StoreError("value total of ('x', 'd', 'USD') overflows 64 bits"))
    assert not is_transient(KeyError("campaign_id"))


def test_the_cli_lists_and_queues_replays(tmp_path: Path) -> None:
    from convtrack.store.quarantine.base import store_path

    opened = SqliteQuarantineStore(store_path(tmp_path))
    opened.add([event(1), event(2, "cold", "events")])
    opened.close()
    runner = CliRunner()
    listed = runner.invoke(cli, ["quarantine", "list", "--data-dir", str(tmp_path),
                                 "--format", "json"])  # fmt: skip
    assert listed.exit_code == 0, listed.output
    rows = json.loads(listed.stdout)
    assert [(r["stage"], r["event_id"], r["error"]) for r in rows] == [
        ("hot_apply", "e1", "boom"), ("cold", "e2", "boom"),
    ]  # fmt: skip
    replayed = runner.invoke(cli, ["quarantine", "replay", "--stage", "cold",
                                   "--data-dir", str(tmp_path)])  # fmt: skip
    assert replayed.exit_code == 0 and replayed.stdout.strip() == "replayed 1"
    bad = runner.invoke(cli, ["quarantine", "list", "--stage", "nowhere",
                              "--data-dir", str(tmp_path)])  # fmt: skip
    assert bad.exit_code == 2
