"""Poison events at the lake writer and at a destination: the rest flows, the poison is
kept (quarantine or dead letters) and a replay sends it once (issue 12, item 1)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pytest

from convtrack import failpoints
from convtrack.clock import ManualClock
from convtrack.deliver.base import Forwarded, Outcome
from convtrack.log.base import LogRecord
from convtrack.runtime.embedded import Pipeline
from convtrack.store.cold.query import connect
from convtrack.store.cold.runner import ColdStoreRunner
from convtrack.store.cold.tables import Position, RejectsSource
from convtrack.store.cold.writer import TableWriter
from convtrack.testing.standins.base import Answer
from tests.support.deliverkit import TinyDestination, TinyPlatform, drain, ingest, runner, settings


def lake_ids(pipeline: Pipeline) -> list[str]:
    rows = connect(pipeline.lake).execute("SELECT event_id FROM events ORDER BY 1").fetchall()
    return [r[0] for r in rows]


def test_a_row_the_lake_cannot_take_is_quarantined_and_the_rest_written(
    pipeline: Pipeline, clock: ManualClock
) -> None:
    with failpoints.poison("cold", "e2"):
        ingest(pipeline, clock, "e1", "e2", "e3")
        pipeline.cold.flush_all()
        assert lake_ids(pipeline) == ["e1", "e3"]
        (row,) = pipeline.backends.quarantine.items()
        assert (row.event.stage, row.event.scope, row.event.event_id) == ("cold", "events", "e2")
        assert "injected fault" in row.event.error
        # The chain moved past it: later events are written as usual.
        ingest(pipeline, clock, "e4")
        pipeline.cold.flush_all()
        assert lake_ids(pipeline) == ["e1", "e3", "e4"]
        # A replay while it still fails keeps it, with one more attempt.
        assert pipeline.backends.quarantine.mark_replay("cold") == 1
        clock.advance(2.0)
        pipeline.cold.flush_all()
        (again,) = pipeline.backends.quarantine.items()
        assert again.attempts == 2 and not again.replay
    assert pipeline.backends.quarantine.mark_replay() == 1
    clock.advance(2.0)
    pipeline.cold.flush_all()
    assert lake_ids(pipeline) == ["e1", "e2", "e3", "e4"]
    assert pipeline.backends.quarantine.total() == 0
    # Replaying again adds nothing twice.
    assert pipeline.backends.quarantine.mark_replay() == 0
    clock.advance(2.0)
    pipeline.cold.flush_all()
    assert lake_ids(pipeline) == ["e1", "e2", "e3", "e4"]


class ReadTrips(TinyDestination):
    """A destination whose answer reading has a bug that shows for one event."""

    def __init__(self, url: str, trips_on: str, **kw: object) -> None:
        super().__init__("tiny", url, **kw)  # type: ignore[arg-type]
        self.trips_on = trips_on

    def read(
        self, events: Sequence[Forwarded], status: int, headers: dict[str, str], body: bytes
    ) -> Outcome:
        if any(e.event_id == self.trips_on for e in events):
            raise KeyError("order_id")
        return super().read(events, status, headers, body)


@pytest.fixture
def tiny(platform: TinyPlatform) -> Iterator[str]:
    yield f"{platform.base_url}/events"


def dead_ids(pipeline: Pipeline) -> dict[str, str]:
    return {d.event.event_id: d.last_answer for d in pipeline.deadletters.items("tiny", 100)}


def test_a_request_that_cannot_be_built_dead_letters_only_its_poison_event(
    pipeline: Pipeline, clock: ManualClock, platform: TinyPlatform, tiny: str
) -> None:
    delivery = runner(pipeline, clock, TinyDestination("tiny", tiny), settings())
    ingest(pipeline, clock, "d1", "d2", "d3")
    try:
        with failpoints.poison("deliver", "d2"):
            drain(delivery)
        assert platform.accepted == ["d1", "d3"]
        (answer,) = dead_ids(pipeline).values()
        assert set(dead_ids(pipeline)) == {"d2"}
        assert "could not be built" in answer and "injected fault" in answer
        ingest(pipeline, clock, "d4")
        drain(delivery)
        assert platform.accepted == ["d1", "d3", "d4"]
        # Fixed: the dead letter is replayed like any other.
        assert pipeline.deadletters.mark_replay("tiny") == 1
        drain(delivery)
        assert platform.accepted == ["d1", "d3", "d4", "d2"]
    finally:
        delivery.stop()


def test_an_answer_that_cannot_be_read_is_read_per_event(
    pipeline: Pipeline, clock: ManualClock, platform: TinyPlatform, tiny: str
) -> None:
    delivery = runner(pipeline, clock, ReadTrips(tiny, "r2"), settings())
    ingest(pipeline, clock, "r1", "r2", "r3")
    try:
        drain(delivery)
        assert set(dead_ids(pipeline)) == {"r2"}
        assert "answer could not be read" in dead_ids(pipeline)["r2"]
        assert {"r1", "r3"} <= set(platform.accepted)
        assert delivery.health()["lag_events"] == 0
    finally:
        delivery.stop()


def test_an_entry_that_cannot_be_selected_is_quarantined_and_passed_over(
    pipeline: Pipeline, clock: ManualClock, platform: TinyPlatform, tiny: str
) -> None:
    ingest(pipeline, clock, "s1")
    pipeline.processed.append_blocking([LogRecord("k", b"{not json")])
    ingest(pipeline, clock, "s2")
    delivery_quarantine = pipeline.backends.quarantine
    delivery = runner(pipeline, clock, TinyDestination("tiny", tiny), settings(),
                      quarantine=delivery_quarantine)  # fmt: skip
    try:
        drain(delivery)
        assert platform.accepted == ["s1", "s2"]
        (row,) = delivery_quarantine.items("deliver")
        assert (row.event.scope, row.event.log, row.event.event_id) == ("tiny", "processed", None)
        assert row.as_json()["payload_base64"]
        assert delivery.health()["lag_events"] == 0
        # A replay of what still cannot be read keeps it.
        assert delivery_quarantine.mark_replay("deliver") == 1
        clock.advance(2.0)
        drain(delivery)
        assert delivery_quarantine.items("deliver")[0].attempts == 2
    finally:
        delivery.stop()


class Broken(RejectsSource):
    """A table source with a bug that is not an error of ours: it kills the writer's thread."""

    def poll(self, max_rows: int, timeout_secs: float) -> list[tuple[Position, object]]:
        raise RuntimeError("a bug in a source")


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_cold_store_whose_thread_died_is_reported_stalled(
    pipeline: Pipeline, clock: ManualClock
) -> None:
    writer = TableWriter(
        lake=pipeline.lake, source=Broken(pipeline.rejects), clock=clock,
        metrics=pipeline.metrics, flush_interval_secs=300, flush_max_rows=10,
    )  # fmt: skip
    cold = ColdStoreRunner([writer], pipeline.metrics)
    assert cold.health()["stalled"] is False  # not started: not stalled
    cold.start()
    cold._thread.join(10.0)
    health = cold.health()
    assert (health["healthy"], health["stalled"]) == (False, True)
    assert "thread died" in str(health["detail"])


def test_a_destination_with_events_waiting_that_commits_nothing_is_stalled(
    pipeline: Pipeline, clock: ManualClock, platform: TinyPlatform, tiny: str
) -> None:
    platform.plan = [Answer(503)] * 50
    table = settings(breaker_threshold=1, breaker_cooldown_secs=3600)
    delivery = runner(pipeline, clock, TinyDestination("tiny", tiny), table)
    ingest(pipeline, clock, "w1")
    try:
        delivery.run_once()  # one failing request opens the circuit: nothing is committed
        delivery.run_once()
        assert delivery.health()["stalled"] is False
        clock.advance(pipeline.settings.process.stall_secs + 1)
        health = delivery.health()
        assert (health["healthy"], health["stalled"]) == (False, True)
        assert "stalled: nothing committed" in str(health["detail"])
    finally:
        delivery.stop()
