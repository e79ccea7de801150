"""Readiness follows the lake's recovery within a probe interval, not the retry backoff.

A cold-store runner is driven step by step with a manual clock: one step per
simulated second, as the health monitor checks once a second. The lake fails
for real (its directory replaced by a file, as an unmounted or full volume
refuses writes; an S3 server stopped) and then comes back.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from convtrack.clock import ManualClock
from convtrack.devservices.seaweed import SeaweedS3
from convtrack.log.base import LogRecord
from convtrack.log.sqlite import SqliteLog
from convtrack.model.processed import encode_processed
from convtrack.observe.metrics import Metrics
from convtrack.runtime.backends import open_cold_store
from convtrack.runtime.health import readiness
from convtrack.store.cold.base import ColdStore
from convtrack.store.cold.manifest import read_state
from convtrack.store.cold.runner import ColdStoreRunner
from convtrack.store.cold.tables import EventsSource
from convtrack.store.cold.writer import TableWriter
from tests.store.test_cold_store import T0, processed
from tests.support.s3_fixtures import require_weed


class Cold:
    """A processed log, a runner of one events writer on ``lake``, and a manual clock."""

    def __init__(self, root: Path, lake: ColdStore) -> None:
        self.clock = ManualClock(start_us=T0)
        self.log = SqliteLog(root / "processed.db")
        self.lake = lake
        self.metrics = Metrics()
        writer = TableWriter(
            lake=lake,
            source=EventsSource(self.log.consumer("cold")),
            clock=self.clock,
            metrics=self.metrics,
            flush_interval_secs=3600,
            flush_max_rows=1,  # every event is a flush: each step meets the lake
        )
        self.runner = ColdStoreRunner([writer], self.metrics, clock=self.clock)
        self.sent = 0

    def send(self) -> None:
        record = LogRecord("k", encode_processed(processed(self.sent)))
        asyncio.run(self.log.append([record]))
        self.sent += 1

    def tick(self) -> bool:
        """One second passes and the runner takes its step; True if ``cold`` is ready."""
        self.clock.advance(1.0)
        self.runner.step()
        _, degraded = readiness({"cold": self.runner.health})
        return "cold" not in degraded

    def ticks_until_ready(self, limit: int) -> int:
        for n in range(1, limit + 1):
            if self.tick():
                return n
        raise AssertionError(f"cold still unready after {limit} health checks")

    def fail_for(self, secs: int) -> None:
        """Keep the runner failing for ``secs`` simulated seconds: its backoff grows to 30 s."""
        self.send()
        self.runner.step()
        assert self.runner.health()["healthy"] is False
        for _ in range(secs):
            assert self.tick() is False

    def failed_rounds(self) -> float:
        value: float = self.metrics.errors.labels("cold", "StoreError")._value.get()
        return value

    def rows(self) -> int:
        return sum(f.rows for f in read_state(self.lake, "events").files.values())


@pytest.fixture
def local(tmp_path: Path) -> Iterator[Cold]:
    cold = Cold(tmp_path, open_cold_store(str(tmp_path / "lake")))
    yield cold
    cold.log.close()


def swap_for_file(path: Path) -> Path:
    """Make ``path`` unwritable even for root: move the directory away, put a file there."""
    away = path.with_name(path.name + ".away")
    path.rename(away)
    path.write_text("not a directory\n")
    return away


def restore(path: Path, away: Path) -> None:
    path.unlink()
    away.rename(path)


def test_ready_again_within_two_checks_after_the_lake_returns(local: Cold) -> None:
    local.send()
    assert local.tick() is True and local.rows() == 1
    away = swap_for_file(Path(local.lake.root))
    local.fail_for(60)
    restore(Path(local.lake.root), away)
    assert local.ticks_until_ready(limit=2) == 1  # the backoff had reached 30 s
    assert local.rows() == 2 and local.runner.health()["buffered_rows"] == 0


def test_a_probe_blind_to_the_fault_does_not_defeat_the_backoff(local: Cold) -> None:
    """Only the table's directory fails: probes succeed, flushes do not."""
    local.send()
    assert local.tick() is True
    events = Path(local.lake.root) / "events"
    away = swap_for_file(events)
    local.fail_for(120)
    # One retry the first good probe started, then the backoff alone: 0.5, 1, 2, ... 30 s.
    assert local.failed_rounds() <= 10
    assert local.runner.retry.probes >= 100
    restore(events, away)
    assert local.ticks_until_ready(limit=31) >= 1
    assert local.rows() == 2


@pytest.fixture
def own_s3(tmp_path: Path) -> Iterator[SeaweedS3]:
    """A server of this test's own, so it can be stopped without disturbing others."""
    require_weed()
    service = SeaweedS3(tmp_path / "weed")
    service.start()
    yield service
    service.stop()


def test_ready_again_within_two_checks_after_s3_returns(tmp_path: Path, own_s3: SeaweedS3) -> None:
    lake = open_cold_store("s3://readiness/lake", environ=own_s3.env())
    cold = Cold(tmp_path, lake)
    try:
        cold.send()
        assert cold.tick() is True and cold.rows() == 1
        own_s3.stop()
        cold.fail_for(8)  # the next full retry is 8 s away when S3 returns
        own_s3.start()
        assert cold.ticks_until_ready(limit=2) == 1
        assert cold.rows() == 2
    finally:
        cold.log.close()
