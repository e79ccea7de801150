"""The real processor on either hot store, with faults at its boundaries.

``hot_settings`` gives the settings of a pipeline whose hot store is SQLite or
the test Redis; ``fresh_runner`` builds a processor on a pipeline's stores as a
restarted process would (it resumes from the processed log's tail);
``FailingPublish`` makes the processed log refuse the next appends (a failed
publish, which the runner retries); ``count_then_crash`` is a processor that
dies between counting a batch and publishing it (or, when a poison event
fails the batch first, before counting anything).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from convtrack.clock import Clock
from convtrack.errors import LogUnavailable
from convtrack.failpoints import InjectedFault
from convtrack.log.base import EventLog, LogRecord, next_positions
from convtrack.model.event import Envelope, encode_envelope
from convtrack.model.processed import ProcessedEvent, decode_processed
from convtrack.process.base import GROUP, Batch, Item
from convtrack.process.runner import ProcessorRunner, resume_positions
from convtrack.runtime.embedded import Pipeline, build_chain

HOT_KINDS = ("sqlite", "redis")


def hot_settings(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    """Settings overrides for a pipeline on ``kind`` (Redis: a prefix of this test's own)."""
    if kind == "sqlite":
        return {}
    from tests.support.redis_fixtures import require_redis

    require_redis()
    url = request.getfixturevalue("redis_url")
    prefix = "p" + hashlib.sha1(str(tmp_path).encode()).hexdigest()[:12]
    return {"hot": {"kind": "redis", "redis_url": url, "redis_prefix": prefix}}


class FailingPublish:
    """Within ``with``, the processed log's next ``times`` appends fail (then work again)."""

    def __init__(self, processed: EventLog, times: int = 1) -> None:
        self.left = times
        self._log = processed
        self._append = processed.append_blocking

    def __enter__(self) -> FailingPublish:
        setattr(self._log, "append_blocking", self._maybe_fail)  # noqa: B010 (over a method)
        return self

    def __exit__(self, *exc: object) -> None:
        delattr(self._log, "append_blocking")  # the class's own again

    def _maybe_fail(self, records: Sequence[LogRecord]) -> list[int]:
        if self.left > 0:
            self.left -= 1
            raise LogUnavailable("injected: the processed log refused the append")
        return self._append(records)


def count_then_crash(pipeline: Pipeline, clock: Clock, max_batch: int = 2000) -> int:
    """Read one batch from where a restarted processor would, count it, and die before
    its publish lands; returns how many entries it held."""
    consumer = pipeline.log.consumer(GROUP)
    try:
        consumer.seek(resume_positions(pipeline.hot.positions(GROUP), pipeline.processed))
        chain = build_chain(
            pipeline.settings, pipeline.hot, consumer, pipeline.processed, clock, pipeline.metrics
        )
        entries = consumer.poll(max_batch, 0.05)
        if entries:
            batch = Batch(items=[Item(entry=e) for e in entries], positions=next_positions(entries))
            with FailingPublish(pipeline.processed, times=1):
                try:
                    chain.submit(batch)
                except LogUnavailable:
                    pass  # counted, not published: the crash
                except InjectedFault:
                    pass  # a poison event failed the batch before anything was counted
        return len(entries)
    finally:
        consumer.close()


def append_events(pipeline: Pipeline, envelopes: Sequence[Envelope]) -> None:
    """Log accepted events as the collector would, with their times as given."""
    records = [LogRecord(e.partition_key, encode_envelope(e)) for e in envelopes]
    pipeline.log.append_blocking(records)


def fresh_runner(
    pipeline: Pipeline, clock: Clock, max_batch: int = 2000, quarantine: bool = False
) -> ProcessorRunner:
    """A processor on ``pipeline``'s stores, as after a restart (not started: run_once).

    With ``quarantine``, an event that fails alone goes to the pipeline's quarantine at
    its first failure (no backoff to wait out); without, it is retried.
    """
    return ProcessorRunner(
        event_log=pipeline.log,
        processed=pipeline.processed,
        hot=pipeline.hot,
        make_chain=lambda consumer: build_chain(
            pipeline.settings, pipeline.hot, consumer, pipeline.processed, clock, pipeline.metrics
        ),
        clock=clock,
        metrics=pipeline.metrics,
        max_batch=max_batch,
        poll_timeout_secs=0.01,
        quarantine=pipeline.backends.quarantine if quarantine else None,
        poison_attempts=1,
    )


def run_until_idle(runner: ProcessorRunner) -> None:
    while runner.run_once():
        pass


def published_events(pipeline: Pipeline) -> list[ProcessedEvent]:
    """Everything in the processed log, in partition then log order."""
    consumer = pipeline.processed.consumer("test-reader-" + str(id(object())))
    out: list[ProcessedEvent] = []
    try:
        while entries := consumer.poll(10_000, 0.05):
            out += [decode_processed(entry.payload) for entry in entries]
    finally:
        consumer.close()
    return out
