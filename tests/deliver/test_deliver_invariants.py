"""Conservation under random faults: every eligible event is accepted exactly once or is a
dead letter, never both, never neither (faults that lose no acknowledgement)."""

from __future__ import annotations

from pathlib import Path
from tempfile import TemporaryDirectory

from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from convtrack.clock import ManualClock
from convtrack.testing.standins.base import Answer
from tests.support.deliverkit import (
    START_US,
    TinyDestination,
    TinyPlatform,
    drain,
    ingest,
    open_pipeline,
    runner,
    settings,
)

WHOLE_FAULTS = st.sampled_from(
    [Answer(500), Answer(503, {"Retry-After": "2"}), Answer(429), Answer(400, body=b"bad"),
     Answer(401)]
)  # fmt: skip
ROW_FAULTS = st.lists(st.sampled_from(["retry", "reject:bad row"]), max_size=4)


@hsettings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    count=st.integers(min_value=1, max_value=8),
    batch=st.integers(min_value=1, max_value=5),
    whole=st.lists(WHOLE_FAULTS, max_size=6),
    rows=st.dictionaries(st.integers(min_value=0, max_value=7), ROW_FAULTS, max_size=4),
    max_attempts=st.integers(min_value=1, max_value=4),
)
def test_every_event_is_delivered_once_or_dead_lettered(
    count: int,
    batch: int,
    whole: list[Answer],
    rows: dict[int, list[str]],
    max_attempts: int,
) -> None:
    clock = ManualClock(start_us=START_US)
    ids = [f"e{i}" for i in range(count)]
    with TemporaryDirectory() as tmp, TinyPlatform() as platform:
        platform.plan = list(whole)
        platform.row_faults = {f"e{i}": list(faults) for i, faults in rows.items()}
        pipeline = open_pipeline(Path(tmp), clock)
        dest = TinyDestination("tiny", f"{platform.base_url}/events", max_batch_events=batch)
        table = settings(max_attempts=max_attempts, setup_pause_secs=10, breaker_threshold=3,
                         breaker_cooldown_secs=30)  # fmt: skip
        delivery = runner(pipeline, clock, dest, table)
        try:
            ingest(pipeline, clock, *ids)
            for _ in range(50):  # pauses and an open circuit end as the clock moves on
                drain(delivery)
                if delivery.health()["lag_events"] == 0 and not delivery.health()["paused"]:
                    break
                clock.advance(30)
            dead = [d.event.event_id for d in pipeline.deadletters.items("tiny", 1000)]
            lag = delivery.health()["lag_events"]
        finally:
            delivery.stop()
            pipeline.close()
    assert lag == 0
    assert len(platform.accepted) == len(set(platform.accepted))  # no event twice
    assert not set(platform.accepted) & set(dead)
    assert sorted(platform.accepted + dead) == sorted(ids)
