"""A poison event never stops counting: it is quarantined at the stage it fails, the rest
of its batch is counted, and a replay re-submits it once (issue 12, item 1)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from convtrack import failpoints
from convtrack.clock import ManualClock
from convtrack.log.base import LogRecord
from convtrack.model.event import Envelope, encode_envelope
from convtrack.process.base import STAGES
from convtrack.runtime.embedded import Pipeline
from tests.conftest import ADMIN_KEY, SERVER_KEY, WRITE_KEY
from tests.support.inprocess import call, conversions, make_pipeline, process_all


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(start_us=1_796_000_000_000_000)


@pytest.fixture(params=["sqlite", "redis"])
def pipeline(
    request: pytest.FixtureRequest, tmp_path: Path, clock: ManualClock
) -> Iterator[Pipeline]:
    settings: dict[str, Any] = {}
    if request.param == "redis":
        url = request.getfixturevalue("redis_url")
        settings["hot"] = {"kind": "redis", "redis_url": url, "redis_prefix": uuid.uuid4().hex}
    built = make_pipeline(tmp_path / "data", clock, **settings)
    yield built
    built.close()


def today(clock: ManualClock) -> str:
    return datetime.fromtimestamp(clock.now_us() / 1e6, tz=UTC).strftime("%Y-%m-%d")


def purchase(clock: ManualClock, event_id: str, **kw: Any) -> dict[str, Any]:
    body = {"event_id": event_id, "event_name": "Purchase", "user_id": f"u-{event_id}",
            "value": 100, "currency": "EUR", "campaign_id": "spring",
            "timestamp": clock.now_us() // 1000}  # fmt: skip
    body.update(kw)
    return body


def send_all(pipeline: Pipeline, clock: ManualClock, ids: list[str]) -> None:
    response = call(pipeline, "POST", "/v1/batch", {"batch": [purchase(clock, i) for i in ids]},
                    key=WRITE_KEY)  # fmt: skip
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == len(ids)


def quarantined(pipeline: Pipeline) -> dict[str, Any]:
    response = call(pipeline, "GET", "/v1/quarantine", key=ADMIN_KEY)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def metric(pipeline: Pipeline, stage: str) -> float:
    value = pipeline.metrics.registry.get_sample_value(
        "convtrack_quarantined_events_total", {"stage": stage}
    )
    return value or 0.0


@pytest.mark.parametrize("stage", STAGES)
def test_a_poison_event_at_any_stage_is_quarantined_and_the_rest_counted(
    pipeline: Pipeline, clock: ManualClock, stage: str
) -> None:
    ids = [f"e{i}" for i in range(9)]
    send_all(pipeline, clock, ids)
    with failpoints.poison(stage, "e4"):
        process_all(pipeline)
        assert conversions(pipeline, today(clock))["conversions"] == 8
        listing = quarantined(pipeline)
        assert listing["total"] == 1
        (row,) = listing["items"]
        assert (row["stage"], row["event_id"]) == (stage, "e4")
        assert "injected fault" in row["error"]
        assert row["payload"]["event_id"] == "e4"
        assert metric(pipeline, stage) == 1
        # Later events keep counting: the stream is not stopped by the poison.
        send_all(pipeline, clock, ["later"])
        process_all(pipeline)
        assert conversions(pipeline, today(clock))["conversions"] == 9
        # A replay while it still fails: it stays quarantined, nothing is counted twice.
        replay = call(pipeline, "POST", "/v1/quarantine/replay", {}, key=ADMIN_KEY)
        assert replay.json() == {"replayed": 1}
        clock.advance(2.0)
        process_all(pipeline)
        process_all(pipeline)
        assert quarantined(pipeline)["total"] == 1
        assert conversions(pipeline, today(clock))["conversions"] == 9
    # Fixed: the replay counts it, once.
    assert call(pipeline, "POST", "/v1/quarantine/replay", {"stage": stage},
                key=ADMIN_KEY).json() == {"replayed": 1}  # fmt: skip
    clock.advance(2.0)
    process_all(pipeline)
    clock.advance(2.0)
    process_all(pipeline)
    assert conversions(pipeline, today(clock))["conversions"] == 10
    assert quarantined(pipeline)["total"] == 0
    assert call(pipeline, "POST", "/v1/quarantine/replay", {}, key=ADMIN_KEY).json() == {
        "replayed": 0
    }
    kept = sorted(e.event.event_id for e in published(pipeline))
    assert kept == sorted([*ids, "later"])


def published(pipeline: Pipeline) -> list[Any]:
    from convtrack.model.processed import decode_processed

    consumer = pipeline.processed.consumer("test-reader")
    try:
        return [decode_processed(e.payload) for e in consumer.poll(10_000, 0.0)]
    finally:
        consumer.close()


def test_the_quarantine_needs_an_admin_key(pipeline: Pipeline) -> None:
    assert call(pipeline, "GET", "/v1/quarantine", key=SERVER_KEY).status_code == 403
    assert call(pipeline, "POST", "/v1/quarantine/replay", {}, key=SERVER_KEY).status_code == 403
    for query in ("stage=nowhere", "stage=", "limit=0", "limit=", "limit=%C2%B2", "cursor=-1",
                  "cursor=9223372036854775808", "cursor=99999999999999999999"):  # fmt: skip
        bad = call(pipeline, "GET", f"/v1/quarantine?{query}", key=ADMIN_KEY)
        assert (bad.status_code, bad.json()["error"]) == (400, "query_invalid"), query
    assert call(pipeline, "POST", "/v1/quarantine/replay", {"stage": 3},
                key=ADMIN_KEY).status_code == 400  # fmt: skip


def test_the_poison_pair_of_the_issue_never_stops_counting(
    pipeline: Pipeline, clock: ManualClock
) -> None:
    """Two values that overflow a 64-bit total together, already in the log (accepted
    before ingest bounded values): whatever the store does with the second (quarantine it,
    or saturate once sums are safe), every other event counts."""
    huge = 9_223_372_036_854_775_807
    now = clock.now_us()
    pair = [
        Envelope(event_id=f"big{i}", source="default", event_name="Purchase", event_time_us=now,
                 received_at_us=now, user_id=f"ub{i}", value=huge, currency="USD",
                 campaign_id="x")
        for i in range(2)
    ]  # fmt: skip
    pipeline.log.append_blocking([LogRecord(e.user_id or "", encode_envelope(e)) for e in pair])
    send_all(pipeline, clock, [f"o{i}" for i in range(20)])
    process_all(pipeline)
    send_all(pipeline, clock, ["after"])
    process_all(pipeline)
    assert conversions(pipeline, today(clock), "spring")["conversions"] == 21
    counted_x = conversions(pipeline, today(clock), "x")["conversions"]
    listing = quarantined(pipeline)
    assert counted_x + listing["total"] == 2
    assert all(row["stage"] == "hot_apply" for row in listing["items"])
    assert pipeline.processor.health()["healthy"] is True


def test_a_replay_that_crashed_after_appending_counts_the_event_once(
    pipeline: Pipeline, clock: ManualClock
) -> None:
    send_all(pipeline, clock, ["p1", "p2", "p3"])
    with failpoints.poison("enrich", "p2"):
        process_all(pipeline)
    store = pipeline.backends.quarantine
    assert store.mark_replay() == 1
    # The first replay appended the event, then its process died before removing the row.
    (claimed,) = store.claim(STAGES, "", 10, clock.now_us())
    pipeline.log.append_blocking([LogRecord(claimed.event.key, claimed.event.payload)])
    process_all(pipeline)
    assert conversions(pipeline, today(clock))["conversions"] == 3
    # The claim's lease lapses: the next replay appends it again, and dedup drops the copy.
    clock.advance(400.0)
    process_all(pipeline)
    process_all(pipeline)
    assert store.total() == 0
    assert conversions(pipeline, today(clock))["conversions"] == 3
