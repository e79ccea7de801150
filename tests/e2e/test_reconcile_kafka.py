"""``convtrack reconcile`` on a Kafka log: in-flight counts from positions, behind until caught up.

A real single-node broker (tests/support/kafka_fixtures.py); the pipeline runs in this
process, its processor and cold store driven by hand.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from convtrack.cli.reconcile import Result, reconcile
from convtrack.clock import SystemClock
from convtrack.devservices.kafka import KafkaBroker
from convtrack.runtime.embedded import Pipeline
from tests.conftest import WRITE_KEY
from tests.log.test_log_kafka import prefix_of
from tests.support.inprocess import call, make_pipeline

pytestmark = pytest.mark.slow

DESKTOP_UA = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko)"
    " Chrome/126.0 Safari/537.36"
)


@pytest.fixture
def pipeline(tmp_path: Path, kafka_service: KafkaBroker) -> Iterator[Pipeline]:
    built = make_pipeline(
        tmp_path / "data",
        SystemClock(),  # the broker stamps records with its own clock
        limits={"user_events_per_sec": 100_000},
        log={
            "kind": "kafka",
            "kafka_bootstrap": kafka_service.bootstrap,
            "kafka_topic_prefix": prefix_of(tmp_path),
            "kafka_partitions": 3,
            "kafka_linger_ms": 1.0,
        },
    )
    yield built
    built.close()


def until(what: str, step: Callable[[], object], done: Callable[[], bool]) -> None:
    """Run ``step`` until ``done``: a Kafka consumer gets its partitions after joining."""
    deadline = time.monotonic() + 30
    while not done():
        assert time.monotonic() < deadline, f"timed out: {what}"
        step()


def test_a_kafka_backlog_is_behind_with_its_count_until_processed_and_stored(
    pipeline: Pipeline,
) -> None:
    day = time.strftime("%Y-%m-%d", time.gmtime())
    for i in range(7):
        body = {
            "event_id": f"k{i}", "event_name": "Purchase", "user_id": f"u{i}", "value": 100,
            "currency": "USD", "campaign_id": "spring", "context": {"user_agent": DESKTOP_UA},
        }  # fmt: skip
        answer = call(pipeline, "POST", "/v1/track", body, key=WRITE_KEY)
        assert answer.status_code == 202, answer.text

    behind = reconcile(pipeline.settings, day)
    assert (behind.status, behind.exit_code) == ("behind", 3), behind.text
    assert behind.in_flight.not_counted == 7
    assert behind.in_flight.not_counted_dated is None  # Kafka: counted, not read
    assert "accepted, not yet counted by the processor: 7 event(s) (their dates not read)" in (
        behind.text
    )

    until(
        "every event counted",
        pipeline.processor.run_once,
        lambda: pipeline.hot.conversions(None, day).conversions == 7,
    )
    counted = reconcile(pipeline.settings, day)
    assert (counted.status, counted.exit_code) == ("behind", 3), counted.text
    assert counted.in_flight.not_counted == 0
    assert counted.in_flight.not_in_lake == 7 and counted.in_flight.to_lake is None
    assert "counted, not yet in the lake: at most 7 event(s) (processed records" in counted.text

    result: list[Result] = []
    until(
        "the lake has them all",
        pipeline.cold.flush_all,
        lambda: bool(result.append(reconcile(pipeline.settings, day)) or result[-1].exit_code == 0),
    )
    agreed = result[-1]
    assert agreed.status == "agree" and agreed.in_flight.total == 0, agreed.text
    [row] = agreed.campaigns
    assert (row.hot_conversions, row.lake_conversions, row.lake_value) == (7, 7, {"USD": 700})
