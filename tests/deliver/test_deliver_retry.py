"""The dispatcher's policies, against a real stand-in platform over HTTP, on a manual clock."""

from __future__ import annotations

import itertools
import random

from convtrack.clock import ManualClock
from convtrack.deliver.alerts import Alerts
from convtrack.deliver.outbound import EndpointGuard
from convtrack.runtime.embedded import Pipeline
from convtrack.store.deadletters.base import Failure
from convtrack.testing.events import forwarded
from convtrack.testing.standins.base import Answer, Hangup, Slow
from tests.support.deliverkit import (
    START_US,
    TinyDestination,
    TinyPlatform,
    drain,
    ingest,
    metric,
    runner,
    settings,
)


def dead(pipeline: Pipeline, name: str = "tiny") -> dict[str, tuple[int | None, str, int]]:
    """event id -> (last status, last answer, attempts)."""
    return {d.event.event_id: (d.last_status, d.last_answer, d.attempts)
            for d in pipeline.deadletters.items(name, 1000)}  # fmt: skip


class Timed(TinyDestination):
    """Notes the manual clock at each request it builds."""

    def __init__(self, clock: ManualClock, url: str, **kw: object) -> None:
        super().__init__("tiny", url, **kw)  # type: ignore[arg-type]
        self.clock = clock
        self.times: list[float] = []

    def build(self, events, now_us):  # type: ignore[no-untyped-def]
        self.times.append(self.clock.monotonic())
        return super().build(events, now_us)


FAILURE = Failure(last_status=400, last_answer="HTTP 400: no", attempts=1,
                  first_attempt_at_us=START_US, last_attempt_at_us=START_US)  # fmt: skip


def gaps(times: list[float]) -> list[float]:
    return [round(b - a, 6) for a, b in itertools.pairwise(times)]


def test_transient_and_throttled_failures_back_off_on_their_own_curves(
    pipeline: Pipeline, clock: ManualClock, platform: TinyPlatform
) -> None:
    platform.plan = [Answer(503), Answer(503), Answer(429), Answer(429), Hangup()]
    dest = Timed(clock, f"{platform.base_url}/events")
    table = settings(retry_base_secs=2, retry_cap_secs=3, throttle_base_secs=100,
                     throttle_cap_secs=150, max_attempts=10, breaker_threshold=10)  # fmt: skip
    delivery = runner(pipeline, clock, dest, table, seed=11)
    ingest(pipeline, clock, "e1")
    try:
        drain(delivery)
    finally:
        delivery.stop()
    assert platform.accepted == ["e1"] and len(dest.times) == 6
    # The same seeded draws, computed from the documented curves: full jitter in
    # [0, min(cap, base * 2^(attempt-1))], attempts counted per batch.
    twin = random.Random(11)
    expected = [twin.uniform(0, min(3, 2 * 2**0)), twin.uniform(0, min(3, 2 * 2**1)),
                twin.uniform(0, min(150, 100 * 2**2)), twin.uniform(0, min(150, 100 * 2**3)),
                twin.uniform(0, min(3, 2 * 2**4))]  # fmt: skip
    assert gaps(dest.times) == [round(x, 6) for x in expected]
    assert metric(pipeline, "convtrack_deliver_attempts_total", destination="tiny",
                  outcome="throttled") == 2  # fmt: skip
    assert metric(pipeline, "convtrack_deliver_attempts_total", destination="tiny",
                  outcome="error") == 1  # fmt: skip


def test_retry_after_is_honoured_over_the_policy(
    pipeline: Pipeline, clock: ManualClock, platform: TinyPlatform
) -> None:
    platform.plan = [Answer(429, {"Retry-After": "7"}), Answer(503, {"Retry-After": "0"})]
    dest = Timed(clock, f"{platform.base_url}/events")
    delivery = runner(pipeline, clock, dest, settings(throttle_base_secs=1000))
    ingest(pipeline, clock, "e1")
    try:
        drain(delivery)
    finally:
        delivery.stop()
    assert gaps(dest.times) == [7.0, 0.0] and platform.accepted == ["e1"]


def test_attempts_bound_the_retries_then_the_last_answer_is_kept(
    pipeline: Pipeline, clock: ManualClock, platform: TinyPlatform
) -> None:
    platform.plan = [Answer(500, body=b"first"), Answer(502, body=b"second"),
                     Answer(503, body=b"third")] + [Answer(500)] * 5  # fmt: skip
    dest = TinyDestination("tiny", f"{platform.base_url}/events")
    delivery = runner(pipeline, clock, dest, settings(max_attempts=3, breaker_threshold=10))
    ingest(pipeline, clock, "e1", "e2")
    try:
        drain(delivery)
    finally:
        delivery.stop()
    assert len(platform.requests) == 3 and platform.accepted == []
    assert dead(pipeline) == {"e1": (503, "HTTP 503: third", 3), "e2": (503, "HTTP 503: third", 3)}
    assert metric(pipeline, "convtrack_deliver_dead_lettered_total", destination="tiny") == 2


def test_elapsed_time_bounds_the_retries(
    pipeline: Pipeline, clock: ManualClock, platform: TinyPlatform
) -> None:
    platform.plan = [Answer(429, {"Retry-After": "100"}, b"slow down")] * 10
    dest = TinyDestination("tiny", f"{platform.base_url}/events")
    delivery = runner(pipeline, clock, dest, settings(max_elapsed_secs=250, breaker_threshold=10))
    ingest(pipeline, clock, "e1")
    try:
        drain(delivery)
    finally:
        delivery.stop()
    # Attempts at 0, 100 and 200 s; a fourth at 300 s would pass the 250 s budget.
    assert len(platform.requests) == 3
    assert dead(pipeline) == {"e1": (429, "HTTP 429: slow down", 3)}


def test_a_timeout_is_a_transient_failure(
    pipeline: Pipeline, clock: ManualClock, platform: TinyPlatform
) -> None:
    platform.plan = [Slow(1.0)]
    dest = TinyDestination("tiny", f"{platform.base_url}/events")
    delivery = runner(pipeline, clock, dest, settings(timeout_secs=0.2))
    ingest(pipeline, clock, "e1")
    try:
        drain(delivery)
    finally:
        delivery.stop()
    # The slow request may still have been accepted: the platform dedupes on our id.
    assert platform.accepted[-1] == "e1" and len(platform.requests) == 2
    assert dead(pipeline) == {}


def test_a_setup_error_pauses_alerts_and_resumes_without_dead_letters(
    pipeline: Pipeline, clock: ManualClock, platform: TinyPlatform
) -> None:
    platform.plan = [Answer(500), Answer(401, body=b"token expired"), Answer(403)]
    dest = TinyDestination("tiny", f"{platform.base_url}/events")
    alerts = Alerts(pipeline.metrics.deliver.set_alert)
    table = settings(max_attempts=2, setup_pause_secs=300, breaker_threshold=10)
    delivery = runner(pipeline, clock, dest, table, alerts=alerts)
    ingest(pipeline, clock, "e1")
    try:
        drain(delivery)  # 500, then 401: paused
        assert len(platform.requests) == 2
        health = delivery.health()
        assert health["paused"] is True and not health["healthy"]
        assert "token expired" in str(health["detail"])
        assert metric(pipeline, "convtrack_deliver_paused", destination="tiny") == 1
        assert ("paused", "tiny") in alerts.active()
        ingest(pipeline, clock, "e2")
        clock.advance(299)
        drain(delivery)
        assert len(platform.requests) == 2  # still paused: nothing sent
        clock.advance(1)
        drain(delivery)  # 403: paused again (not an attempt: max_attempts 2 is not spent)
        assert len(platform.requests) == 3 and delivery.health()["paused"] is True
        clock.advance(300)
        drain(delivery)
    finally:
        delivery.stop()
    assert dead(pipeline) == {}
    assert sorted(platform.accepted) == ["e1", "e2"]
    assert platform.bodies[0] == platform.bodies[-2]  # the same batch was tried again
    assert delivery.health()["paused"] is False and alerts.active() == {}
    assert metric(pipeline, "convtrack_deliver_paused", destination="tiny") == 0


def test_the_circuit_opens_waits_trials_and_closes(
    pipeline: Pipeline, clock: ManualClock, platform: TinyPlatform
) -> None:
    platform.plan = [Answer(500)] * 3
    dest = TinyDestination("tiny", f"{platform.base_url}/events")
    alerts = Alerts(pipeline.metrics.deliver.set_alert)
    table = settings(breaker_threshold=2, breaker_cooldown_secs=60, max_attempts=10,
                     retry_base_secs=1, retry_cap_secs=1)  # fmt: skip
    delivery = runner(pipeline, clock, dest, table, alerts=alerts)
    ingest(pipeline, clock, "e1")
    try:
        drain(delivery)
        assert len(platform.requests) == 2
        assert delivery.health()["circuit"] == "open"
        assert metric(pipeline, "convtrack_deliver_circuit_open", destination="tiny") == 1
        assert ("circuit_open", "tiny") in alerts.active()
        replay = forwarded("r1", 0, 999, event_name="Purchase", event_time_us=START_US)
        pipeline.deadletters.add("tiny", [replay], FAILURE)
        assert pipeline.deadletters.mark_replay("tiny") == 1
        clock.advance(59)
        drain(delivery)
        assert len(platform.requests) == 2  # open: nothing sent, replays neither
        clock.advance(1)
        drain(delivery)  # the half-open trial fails: open again
        assert len(platform.requests) == 3 and delivery.health()["circuit"] == "open"
        clock.advance(60)
        drain(delivery)  # the trial succeeds: closed
    finally:
        delivery.stop()
    assert platform.accepted == ["e1", "r1"] and dead(pipeline) == {}
    assert delivery.health()["circuit"] == "closed" and alerts.active() == {}
    assert metric(pipeline, "convtrack_deliver_circuit_open", destination="tiny") == 0


def test_partial_failures_retry_only_the_failed_rows_and_dead_letter_rejected_ones(
    pipeline: Pipeline, clock: ManualClock, platform: TinyPlatform
) -> None:
    platform.row_faults = {"e2": ["retry", "retry"], "e3": ["reject:value must be positive"],
                           "e4": ["retry"] * 10}  # fmt: skip
    dest = TinyDestination("tiny", f"{platform.base_url}/events")
    delivery = runner(pipeline, clock, dest, settings(max_attempts=4, breaker_threshold=10))
    ingest(pipeline, clock, "e1", "e2", "e3", "e4")
    try:
        drain(delivery)
    finally:
        delivery.stop()
    assert dest.built == [["e1", "e2", "e3", "e4"], ["e2", "e4"], ["e2", "e4"], ["e4"]]
    assert sorted(platform.accepted) == ["e1", "e2"]
    rows = dead(pipeline)
    assert rows["e3"] == (200, "value must be positive", 1)
    assert rows["e4"] == (200, "some rows failed", 4)
    assert set(rows) == {"e3", "e4"}
    assert metric(pipeline, "convtrack_deliver_delivered_total", destination="tiny") == 2


def test_events_that_age_out_while_retrying_leave_the_batch(
    pipeline: Pipeline, clock: ManualClock, platform: TinyPlatform
) -> None:
    platform.plan = [Answer(503, {"Retry-After": "50"}, b"busy")]
    dest = TinyDestination("tiny", f"{platform.base_url}/events", window_secs=100)
    delivery = runner(pipeline, clock, dest, settings())
    ingest(pipeline, clock, "old", timestamp=(clock.now_us() - 80_000_000) // 1000)
    ingest(pipeline, clock, "young")
    ingest(pipeline, clock, "stale", timestamp=(clock.now_us() - 200_000_000) // 1000)
    try:
        drain(delivery)
    finally:
        delivery.stop()
    assert dest.built == [["old", "young"], ["young"]]  # "stale" was never sent
    assert platform.accepted == ["young"]
    assert dead(pipeline) == {"old": (503, "too_old after 1 attempts (last: HTTP 503: busy)", 1)}
    assert metric(pipeline, "convtrack_deliver_skipped_total", destination="tiny",
                  reason="too_old") == 2  # fmt: skip


def test_pacing_keeps_the_least_interval_between_requests(
    pipeline: Pipeline, clock: ManualClock, platform: TinyPlatform
) -> None:
    platform.plan = [Answer(500)]
    dest = Timed(clock, f"{platform.base_url}/events", min_interval_secs=1.0, max_batch_events=1)
    table = settings(retry_base_secs=0.001, retry_cap_secs=0.001, breaker_threshold=10)
    delivery = runner(pipeline, clock, dest, table)
    ingest(pipeline, clock, "e1", "e2", "e3")
    try:
        drain(delivery)
    finally:
        delivery.stop()
    assert platform.accepted == ["e1", "e2", "e3"] and len(dest.times) == 4
    assert all(gap >= 1.0 for gap in gaps(dest.times))


def test_an_endpoint_that_turns_link_local_pauses_the_destination(
    pipeline: Pipeline, clock: ManualClock, platform: TinyPlatform
) -> None:
    answers = {"platform.test": ["127.0.0.1"]}
    guard = EndpointGuard(allow_private_network=False, resolver=lambda h: answers[h])
    port = platform.base_url.rsplit(":", 1)[1]
    dest = TinyDestination("tiny", f"http://platform.test:{port}/events")
    delivery = runner(pipeline, clock, dest, settings(), guard=guard)
    answers["platform.test"] = ["169.254.169.254"]  # DNS changed after the start
    ingest(pipeline, clock, "e1")
    try:
        drain(delivery)
    finally:
        delivery.stop()
    assert platform.requests == [] and dead(pipeline) == {}
    health = delivery.health()
    assert health["paused"] is True and "169.254.169.254" in str(health["detail"])
    assert metric(pipeline, "convtrack_deliver_attempts_total", destination="tiny",
                  outcome="refused") == 1  # fmt: skip


def test_a_redirect_is_not_followed_and_pauses(
    pipeline: Pipeline, clock: ManualClock, platform: TinyPlatform
) -> None:
    with TinyPlatform() as elsewhere:
        platform.plan = [Answer(307, {"Location": f"{elsewhere.base_url}/events"})]
        dest = TinyDestination("tiny", f"{platform.base_url}/events")
        delivery = runner(pipeline, clock, dest, settings(setup_pause_secs=10))
        ingest(pipeline, clock, "e1")
        try:
            drain(delivery)
            assert elsewhere.requests == [] and platform.accepted == []
            assert "redirect" in str(delivery.health()["detail"])
            clock.advance(10)
            drain(delivery)
        finally:
            delivery.stop()
    assert platform.accepted == ["e1"] and dead(pipeline) == {}


def test_answers_are_read_up_to_64_kib(
    pipeline: Pipeline, clock: ManualClock, platform: TinyPlatform
) -> None:
    platform.plan = [Answer(400, body=b"e" * 200_000)]
    dest = TinyDestination("tiny", f"{platform.base_url}/events")
    delivery = runner(pipeline, clock, dest, settings())
    ingest(pipeline, clock, "e1")
    try:
        drain(delivery)
    finally:
        delivery.stop()
    assert dest.answer_sizes == [64 * 1024]
    ((status, answer, attempts),) = dead(pipeline).values()
    assert status == 400 and attempts == 1 and len(answer) <= 500
