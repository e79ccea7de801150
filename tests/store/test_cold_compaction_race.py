"""Compactions and retention from several store processes, interleaved step by step.

Every ``store`` process compacts the lake, each from its own view of the
table. These tests interleave two of them (and retention) at chosen points,
deterministically, on a local directory and on a real S3 server (SeaweedFS),
and check that every row stays visible exactly once and nothing removed
comes back.
"""

from __future__ import annotations

import io
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from convtrack.observe.metrics import Metrics
from convtrack.runtime.backends import open_cold_store
from convtrack.store.cold.base import ColdStore
from convtrack.store.cold.maintain import (
    Compactor,
    Merge,
    Staged,
    compact,
    expire,
    purge_removed,
    retention_entry,
)
from convtrack.store.cold.manifest import ManifestEntry, commit_change, read_state
from convtrack.store.cold.writer import parquet_bytes
from tests.store.test_cold_store import T0, Harness, processed
from tests.support.s3_fixtures import S3Target
from tests.support.wrapped_lake import WrappedLake

DAY = "2026-11-29"
CLOSED = "2026-11-30"


class HookedLake(WrappedLake):
    """A real lake that runs ``before_read`` (once) just before its next read of a data file:
    the moment another process acts while this one compacts."""

    before_read: Callable[[], None] | None = None

    def read(self, relative: str) -> bytes:
        hook, self.before_read = self.before_read, None
        if hook is not None and relative.endswith(".parquet"):
            hook()
        elif hook is not None:
            self.before_read = hook
        return super().read(relative)


class Race(Harness):
    """A processed log, its cold writer, and views of the lake as other processes open it."""

    def __init__(self, root: Path, open_lake: Callable[[], ColdStore]) -> None:
        super().__init__(root, open_lake())
        self.open_lake = open_lake
        self.offset = 0

    def flush(self, campaign: str = "spring", date: str = DAY) -> None:
        """One event, one flush: one more small file in its directory."""
        self.publish([processed(self.offset, event_date=date, envelope={"campaign_id": campaign})])
        self.offset += 1
        self.pump()
        assert self.writer.flush() == 1

    def hooked_lake(self) -> HookedLake:
        plain = self.open_lake()
        plain.ensure_ready()
        return HookedLake(plain)

    def compactor(self, metrics: Metrics | None = None) -> Compactor:
        return Compactor(self.open_lake(), "events", now_us=T0, metrics=metrics)

    def ids(self) -> list[str]:
        return [r[0] for r in self.rows("select event_id from events order by event_id")]

    def visible(self) -> list[str]:
        return sorted(read_state(self.open_lake(), "events").files)


@pytest.fixture(params=["local", "s3"])
def race(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Race]:
    if request.param == "local":
        uri = str(tmp_path / "lake")
        opened = Race(tmp_path, lambda: open_cold_store(uri))
    else:
        target: S3Target = request.getfixturevalue("s3_bucket")
        opened = Race(tmp_path, lambda: open_cold_store(target.uri, environ=target.env))
    yield opened
    opened.log.close()


def test_the_issue_interleaving_shows_every_row_once(race: Race) -> None:
    """A lists {f1, f2}; a late event flushes f3; B compacts all three; A goes on."""
    race.flush()
    race.flush()
    lake_a = race.hooked_lake()

    def meanwhile() -> None:  # after A listed the table, before it read its inputs
        race.flush()
        assert compact(race.open_lake(), "events", closed_before=CLOSED, now_us=T0) == 1

    lake_a.before_read = meanwhile
    assert compact(lake_a, "events", closed_before=CLOSED, now_us=T0) == 0
    assert race.ids() == ["e0", "e1", "e2"]
    assert len(race.visible()) == 1


def test_a_change_committed_between_stage_and_publish_makes_the_stale_merge_lose(
    race: Race,
) -> None:
    race.flush()
    race.flush()
    metrics = Metrics()
    a = race.compactor(metrics)
    (merge,) = a.plan(closed_before=CLOSED)
    merged = a.merge(merge)
    assert merged is not None
    staged = a.stage(merge, b"merged bytes of f1 and f2", merged.num_rows)
    assert staged is not None and staged.seq == 1
    race.flush()  # the late event
    assert compact(race.open_lake(), "events", closed_before=CLOSED, now_us=T0) == 1
    assert a.publish(staged) is False  # change 1 is B's: A checked a view that is gone
    assert staged.output not in race.open_lake().list("events")  # the loser's file is deleted
    assert a.stage(merge, b"again", merged.num_rows) is None  # f1 and f2 are merged already
    assert race.ids() == ["e0", "e1", "e2"]
    assert metrics.errors.labels("cold", "compaction_race_lost")._value.get() == 1
    assert metrics.errors.labels("cold", "compaction_superseded")._value.get() == 1


def test_a_lost_race_on_other_files_commits_under_the_next_number(race: Race) -> None:
    race.flush("spring")
    race.flush("spring")
    race.flush("autumn")
    race.flush("autumn")
    a, b = race.compactor(), race.compactor()
    spring = next(m for m in a.plan(closed_before=CLOSED) if "spring" in m.directory)
    autumn = next(m for m in b.plan(closed_before=CLOSED) if "autumn" in m.directory)
    merged = a.merge(spring)
    assert merged is not None
    staged = a.stage(spring, b"unused", merged.num_rows)
    assert staged is not None and staged.seq == 1
    assert b.run(autumn) is True  # B takes change 1, for another directory
    assert a.publish(staged) is False
    assert a.run(spring) is True  # its inputs are still visible: committed as change 2
    state = read_state(race.open_lake(), "events")
    assert state.change_seq == 2 and len(state.files) == 2
    assert race.ids() == ["e0", "e1", "e2", "e3"]
    assert sorted(race.open_lake().list("events")) == sorted(set(state.files) | set(state.removed))


def test_a_stale_compaction_cannot_bring_back_what_retention_removed(race: Race) -> None:
    race.flush(date="2026-10-01")
    race.flush(date="2026-10-01")
    race.flush(date=DAY)
    lake_a = race.hooked_lake()

    def meanwhile() -> None:  # retention runs after A listed f1 and f2
        assert expire(race.open_lake(), "events", keep_from="2026-11-01", now_us=T0) == 2

    lake_a.before_read = meanwhile
    assert compact(lake_a, "events", closed_before=CLOSED, now_us=T0) == 0
    assert race.ids() == ["e2"]
    assert race.rows("select min(event_date) from events") == [(DAY,)]


def test_retention_between_stage_and_publish_fails_the_compaction_commit(race: Race) -> None:
    race.flush(date="2026-10-01")
    race.flush(date="2026-10-01")
    a = race.compactor()
    (merge,) = a.plan(closed_before=CLOSED)
    merged = a.merge(merge)
    assert merged is not None
    staged = a.stage(merge, b"rows retention is about to remove", merged.num_rows)
    assert staged is not None
    assert expire(race.open_lake(), "events", keep_from="2026-11-01", now_us=T0) == 2
    assert a.publish(staged) is False
    assert a.run(merge) is False
    assert race.ids() == []


def test_retention_from_a_stale_view_retries_and_removes_the_merged_file(race: Race) -> None:
    race.flush(date="2026-10-01")
    race.flush(date="2026-10-01")
    race.flush(date=DAY)
    lake = race.open_lake()
    stale = read_state(lake, "events")
    entry = retention_entry(stale, "events", keep_from="2026-11-01", now_us=T0)
    assert entry is not None and len(entry.removes) == 2
    assert compact(race.open_lake(), "events", closed_before="2026-11-01", now_us=T0) == 1
    # Committed, this stale entry would leave the merged file of the old day visible.
    assert commit_change(lake, entry, stale.change_seq + 1) is False
    assert expire(lake, "events", keep_from="2026-11-01", now_us=T0) == 1  # the merged file
    assert race.ids() == ["e2"]


def test_purge_deletes_merged_files_that_can_never_be_committed(race: Race) -> None:
    race.flush()
    race.flush()
    dead = race.compactor()
    (merge,) = dead.plan(closed_before=CLOSED)
    orphan = dead.stage(merge, b"a compactor that dies before it commits", 2)
    assert orphan is not None and orphan.seq == 1
    assert compact(race.open_lake(), "events", closed_before=CLOSED, now_us=T0) == 1  # change 1
    race.flush()
    race.flush("autumn")
    race.flush("autumn")
    slow = race.compactor()
    autumn = next(m for m in slow.plan(closed_before=CLOSED) if "autumn" in m.directory)
    merged = slow.merge(autumn)
    assert merged is not None
    pending = slow.stage(autumn, parquet_bytes(merged), merged.num_rows)
    assert pending is not None and pending.seq == 2
    lake = race.open_lake()
    assert purge_removed(lake, "events", now_us=T0, grace_secs=3600) == 1  # only the orphan
    files = lake.list("events")
    assert orphan.output not in files
    assert pending.output in files  # staged for a change that does not exist yet: kept
    assert slow.publish(pending) is True
    assert race.ids() == ["e0", "e1", "e2", "e3", "e4"]


def test_a_change_whose_answer_was_lost_is_found_committed_on_retry(race: Race) -> None:
    lake = race.open_lake()
    lake.ensure_ready()
    mine = ManifestEntry(table="events", kind="retention", removes=["a"], created_at_us=T0)
    other = ManifestEntry(table="events", kind="retention", removes=["b"], created_at_us=T0)
    assert commit_change(lake, mine, 1) is True
    assert commit_change(lake, mine, 1) is True  # a retry finds its own bytes
    assert commit_change(lake, other, 1) is False
    assert read_state(lake, "events").change_seq == 1


OLD = "2026-10-01"
KEEP_FROM = "2026-11-01"
Step = tuple[str, int]
# "advance" moves one compactor on by one step (plan, then stage, then publish).
ACTIONS = ["flush", "flush", "advance", "advance", "advance", "expire", "purge"]
STEPS = st.lists(st.tuples(st.sampled_from(ACTIONS), st.integers(0, 3)), min_size=5, max_size=40)


class Actor:
    """One store process's compactor, one step at a time."""

    def __init__(self, compactor: Compactor) -> None:
        self.compactor = compactor
        self.plans: list[Merge] = []
        self.staged: Staged | None = None

    def advance(self) -> None:
        if self.staged is not None:
            self.publish()
        elif self.plans:
            self.stage()
        else:
            self.plans = self.compactor.plan(closed_before=CLOSED)

    def stage(self) -> None:
        merge = self.plans[0]
        merged = self.compactor.merge(merge)
        staged = None
        if merged is not None:
            staged = self.compactor.stage(merge, parquet_bytes(merged), merged.num_rows)
        if staged is None:
            self.plans.pop(0)  # superseded: given up
        self.staged = staged

    def publish(self) -> None:
        assert self.staged is not None
        if self.compactor.publish(self.staged):
            self.plans.pop(0)
        self.staged = None  # lost: the next stage tries again from a fresh view


def visible_ids(lake: ColdStore) -> list[str]:
    ids: list[str] = []
    for path in read_state(lake, "events").files:
        table = pq.read_table(io.BytesIO(lake.read(path)), columns=["event_id"])
        ids += table.column("event_id").to_pylist()
    return ids


@hsettings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=STEPS)
def test_any_interleaving_of_flushes_compactions_and_retention_keeps_rows_exact(
    steps: list[Step],
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        race = Race(root, lambda: open_cold_store(str(root / "lake")))
        try:
            actors = [Actor(race.compactor()) for _ in range(2)]
            flushed: dict[str, str] = {}
            removed: set[str] = set()
            for action, n in steps:
                actor = actors[n % 2]
                if action == "flush":
                    date = OLD if n >= 2 else DAY
                    flushed[f"e{race.offset}"] = date
                    race.flush(["spring", "autumn"][n % 2], date)
                elif action == "advance":
                    actor.advance()
                elif action == "expire":
                    expire(race.open_lake(), "events", keep_from=KEEP_FROM, now_us=T0)
                    removed |= {i for i, date in flushed.items() if date == OLD}
                elif action == "purge":
                    purge_removed(race.open_lake(), "events", now_us=T0 + 1, grace_secs=0)
                ids = visible_ids(race.open_lake())
                assert len(ids) == len(set(ids)), f"a row shows twice after {action}"
                assert set(ids) == set(flushed) - removed, f"rows wrong after {action}"
        finally:
            race.log.close()
