"""A batch that keeps failing: backoff that a stop ends at once, logs that do not flood,
a backend that is away never quarantines anything, and readiness that names a stall
(issue 12, items 1 and 4)."""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from convtrack.clock import ManualClock
from convtrack.errors import StoreUnavailable
from convtrack.process.base import Batch, Step
from convtrack.process.runner import ProcessorRunner
from convtrack.runtime.embedded import Pipeline, build_chain
from convtrack.runtime.health import ProbeApp
from tests.conftest import WRITE_KEY
from tests.support.inprocess import call, conversions, make_pipeline, process_all
from tests.support.processorkit import fresh_runner


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(start_us=1_796_000_000_000_000)


@pytest.fixture
def pipeline(tmp_path: Path, clock: ManualClock) -> Iterator[Pipeline]:
    built = make_pipeline(tmp_path / "data", clock)
    yield built
    built.close()


def today(clock: ManualClock) -> str:
    return datetime.fromtimestamp(clock.now_us() / 1e6, tz=UTC).strftime("%Y-%m-%d")


def send(pipeline: Pipeline, clock: ManualClock, *ids: str) -> None:
    for event_id in ids:
        body = {"event_id": event_id, "event_name": "Purchase", "user_id": "u1", "value": 5,
                "currency": "EUR", "timestamp": clock.now_us() // 1000}  # fmt: skip
        assert call(pipeline, "POST", "/v1/track", body, key=WRITE_KEY).status_code == 202


class BackendAway(Step):
    """The hot store's Redis is down for the first ``times`` attempts (or for good)."""

    def __init__(self, next_step: Step, times: int | None = None) -> None:
        super().__init__(next_step)
        self.times = times
        self.attempts = 0
        self.failing = threading.Event()
        self.on_attempt: list[object] = []

    def process(self, batch: Batch) -> None:
        self.attempts += 1
        for hook in self.on_attempt:
            hook()  # type: ignore[operator]
        if self.times is None or self.attempts <= self.times:
            if self.attempts >= 2:
                self.failing.set()
            raise StoreUnavailable("hot store (Redis) unavailable during apply: Connection refused")


def runner_with(pipeline: Pipeline, clock: ManualClock, away: list[BackendAway], **kw: int
                ) -> ProcessorRunner:  # fmt: skip
    def chain(consumer: object) -> Step:
        step = BackendAway(
            build_chain(pipeline.settings, pipeline.hot, consumer, pipeline.processed,  # type: ignore[arg-type]
                        clock, pipeline.metrics), **kw)  # fmt: skip
        away.append(step)
        return step

    return ProcessorRunner(
        event_log=pipeline.log, processed=pipeline.processed, hot=pipeline.hot,
        make_chain=chain, clock=clock, metrics=pipeline.metrics,
        quarantine=pipeline.backends.quarantine,
    )  # fmt: skip


def failed_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage() == "batch_failed"]


def test_a_backend_that_is_away_is_retried_and_never_quarantines(
    pipeline: Pipeline, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    send(pipeline, clock, "a", "b", "c")
    away: list[BackendAway] = []
    runner = runner_with(pipeline, clock, away, times=5)
    caplog.set_level(logging.WARNING, logger="convtrack.process")
    assert runner.run_once() == 3
    assert away[0].attempts == 6  # five refusals, then the whole batch at once
    assert conversions(pipeline, today(clock))["conversions"] == 3
    assert pipeline.backends.quarantine.total() == 0
    # Five identical errors within the minute: one line, saying it is transient.
    (line,) = failed_lines(caplog)
    assert line.transient is True  # type: ignore[attr-defined]


def test_repeated_errors_are_logged_once_a_minute_with_the_count(
    pipeline: Pipeline, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    send(pipeline, clock, "a")
    away: list[BackendAway] = []
    runner = runner_with(pipeline, clock, away, times=5)
    # The fourth attempt comes a minute after the first (the injected clock moves).
    away_step: list[BackendAway] = away
    runner_clock_moves = {"at": 4}

    def move() -> None:
        if away_step[0].attempts == runner_clock_moves["at"]:
            clock.advance(61.0)

    away[0].on_attempt.append(move)
    caplog.set_level(logging.WARNING, logger="convtrack.process")
    runner.run_once()
    lines = failed_lines(caplog)
    assert [line.repeats for line in lines] == [0, 2]  # type: ignore[attr-defined]


def test_a_stop_ends_the_retries_of_a_failing_batch_at_once(
    pipeline: Pipeline, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    send(pipeline, clock, "a", "b")
    away: list[BackendAway] = []
    runner = runner_with(pipeline, clock, away)  # fails for good
    caplog.set_level(logging.WARNING, logger="convtrack.process")
    runner.start()
    assert away[0].failing.wait(30.0)
    runner.stop(drain_secs=3.0)
    # The old loop retried without any delay until the drain deadline: thousands of tries.
    assert away[0].attempts <= 4
    assert len(failed_lines(caplog)) == 1
    assert conversions(pipeline, today(clock))["conversions"] == 0
    assert pipeline.backends.quarantine.total() == 0  # nothing is lost: read again at start


def test_readiness_names_a_processor_that_makes_no_progress_with_work_waiting(
    pipeline: Pipeline, clock: ManualClock
) -> None:
    processor = pipeline.processor
    assert processor.health()["healthy"] is True
    send(pipeline, clock, "a")
    clock.advance(pipeline.settings.process.stall_secs - 1)
    assert processor.health()["stalled"] is False
    clock.advance(2)
    health = processor.health()
    assert (health["healthy"], health["stalled"]) == (False, True)
    assert "no progress" in str(health["detail"])
    ready = call(pipeline, "GET", "/readyz")
    assert "processor" in ready.json()["degraded"]
    assert ready.json()["processor"]["stalled"] is True
    probe = ProbeApp(("process",), pipeline.metrics, {"processor": processor.health})
    assert asyncio_status(probe) == 503
    gauge = pipeline.metrics.registry.get_sample_value(
        "convtrack_stage_stalled", {"stage": "process"}
    )
    assert gauge == 1
    process_all(pipeline)
    assert processor.health()["healthy"] is True
    assert asyncio_status(probe) == 200
    # Idle with nothing to do is never a stall.
    clock.advance(10 * pipeline.settings.process.stall_secs)
    assert processor.health()["stalled"] is False


def asyncio_status(app: ProbeApp) -> int:
    import asyncio

    import httpx

    async def go() -> int:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://probe") as client:
            return (await client.get("/readyz")).status_code

    return asyncio.run(go())


def test_a_log_that_cannot_be_read_is_read_again_and_the_processor_goes_on(
    pipeline: Pipeline, clock: ManualClock
) -> None:
    """The SQLite log's poll fails with a LogError (its table is away): the processor
    says so and polls again, as for any failure that is not a stop; it does not end."""
    send(pipeline, clock, "a")
    runner = fresh_runner(pipeline, clock)
    table = sqlite3.connect(pipeline.log.path, isolation_level=None)
    table.execute("ALTER TABLE frames RENAME TO frames_away")
    runner.start()
    try:
        deadline = time.monotonic() + 30.0
        while "LogError" not in (runner.last_error or "") and time.monotonic() < deadline:
            time.sleep(0.01)
        assert "LogError: reading the event log" in (runner.last_error or "")
        table.execute("ALTER TABLE frames_away RENAME TO frames")
        while conversions(pipeline, today(clock))["conversions"] < 1:
            assert time.monotonic() < deadline, runner.last_error
            time.sleep(0.05)
    finally:
        runner.stop(drain_secs=1.0)
        table.close()
