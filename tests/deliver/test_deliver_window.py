"""Several requests out at once (``max_in_flight``), and requests whose fate is unknown.

Real stand-in over HTTP, manual clock. Requests are held open by gates in the
stand-in, so the tests wait on conditions instead of racing the runner.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator

import pytest

from convtrack.clock import ManualClock
from convtrack.deliver.destinations.ga4.settings import Ga4Settings
from convtrack.deliver.inflight import unknown_fate_reason
from convtrack.deliver.runner import DeliveryRunner
from convtrack.runtime.embedded import Pipeline
from convtrack.testing import wait_for
from convtrack.testing.standins.base import After, Answer, Hangup, Request, Slow
from tests.support.deliverkit import (
    AlertSink,
    TinyDestination,
    TinyPlatform,
    drain,
    ingest,
    metric,
    runner,
    settings,
    slack_settings,
)

GATE_SECS = 20.0


class GatedPlatform(TinyPlatform):
    """Holds a request for a gated event id until the test opens the gate, then answers it
    with its queued ``faults`` or normally; counts how many requests are inside at once."""

    def __init__(self) -> None:
        super().__init__()
        self.gates: dict[str, threading.Event] = {}
        self.faults: dict[str, Answer] = {}
        self.inside = 0
        self.arrived = 0
        self.most_inside = 0
        self.waiting: set[str] = set()

    def serve(self, request: Request) -> Answer | None:
        ids = [e["id"] for e in json.loads(request.body)["events"]]
        with self.lock:
            self.inside += 1
            self.arrived += 1
            self.most_inside = max(self.most_inside, self.inside)
        try:
            for event_id in ids:
                gate = self.gates.get(event_id)
                if gate is not None:
                    with self.lock:
                        self.waiting.add(event_id)
                    gate.wait(GATE_SECS)
                fault = self.faults.pop(event_id, None)
                if fault is not None:
                    with self.lock:
                        self.requests.append(request)
                    return fault
            return super().serve(request)
        finally:
            with self.lock:
                self.inside -= 1


@pytest.fixture
def platform() -> Iterator[GatedPlatform]:
    with GatedPlatform() as server:
        yield server  # type: ignore[misc]


def committed(pipeline: Pipeline, name: str = "tiny") -> dict[int, int]:
    consumer = pipeline.processed.consumer(f"deliver-{name}")
    try:
        return consumer.committed()
    finally:
        consumer.close()


def end_positions(pipeline: Pipeline) -> dict[int, int]:
    consumer = pipeline.processed.consumer("probe-end")
    try:
        positions: dict[int, int] = {}
        while entries := consumer.poll(1000, 0.0):
            for entry in entries:
                positions[entry.partition] = max(positions.get(entry.partition, 0),
                                                 entry.offset + 1)  # fmt: skip
        return positions
    finally:
        consumer.close()


def dead(pipeline: Pipeline, name: str = "tiny") -> dict[str, str]:
    return {d.event.event_id: d.last_answer for d in pipeline.deadletters.items(name, 1000)}


def one_per_request(platform: GatedPlatform, dedupes: bool = False) -> TinyDestination:
    """A GA4-like destination: one event per request."""
    return TinyDestination("tiny", f"{platform.base_url}/events", dedupes=dedupes,
                           max_batch_events=1)  # fmt: skip


def sends(dest: TinyDestination) -> list[str]:
    return [event_id for ids in dest.built for event_id in ids]


# -- several requests out at once -------------------------------------------------------------


def test_requests_go_out_together_and_every_event_arrives_once(
    pipeline: Pipeline, clock: ManualClock, platform: GatedPlatform
) -> None:
    ids = [f"e{i}" for i in range(12)]
    gate = threading.Event()
    platform.gates = {e: gate for e in ids[:4]}  # held until four are inside at once
    dest = one_per_request(platform)
    delivery = runner(pipeline, clock, dest, settings(max_in_flight=4))
    ingest(pipeline, clock, *ids)
    try:
        delivery.run_once()
        wait_for("four requests inside at once", lambda: len(platform.waiting) == 4)
        gate.set()
        drain(delivery)
    finally:
        delivery.stop()
    assert platform.most_inside == 4  # never more than max_in_flight
    assert sorted(platform.accepted) == sorted(ids) and len(platform.accepted) == len(ids)
    assert sorted(sends(dest)) == sorted(ids)  # each sent once
    assert committed(pipeline) == end_positions(pipeline)
    assert pipeline.deadletters.in_flight("tiny") == []
    assert delivery.health()["lag_events"] == 0


def test_offsets_stop_before_a_request_still_out(
    pipeline: Pipeline, clock: ManualClock, platform: GatedPlatform
) -> None:
    gate = threading.Event()
    platform.gates = {"e0": gate}
    delivery = runner(pipeline, clock, one_per_request(platform), settings(max_in_flight=4))
    ingest(pipeline, clock, "e0", "e1", "e2", "e3")
    try:
        delivery.run_once()
        wait_for("e1-e3 accepted", lambda: sorted(platform.accepted) == ["e1", "e2", "e3"])
        wait_for("e1-e3 settled", lambda: delivery.delivered == 3)
        delivery.run_once()  # looks at the ended requests: e0 is still out
        assert committed(pipeline) == {}
        assert delivery.health()["requests_in_flight"] == 1
        gate.set()
        drain(delivery)
        assert committed(pipeline) == end_positions(pipeline)
    finally:
        gate.set()
        delivery.stop()
    assert platform.accepted[-1] == "e0"


def test_a_pause_resends_only_the_refused_request_not_those_delivered_beside_it(
    pipeline: Pipeline, clock: ManualClock, platform: GatedPlatform
) -> None:
    gate = threading.Event()
    platform.gates = {"e0": gate}
    platform.faults = {"e0": Answer(401, body=b'{"error":"token expired"}')}
    dest = one_per_request(platform)
    table = settings(max_in_flight=4, setup_pause_secs=60)
    delivery = runner(pipeline, clock, dest, table)
    ingest(pipeline, clock, "e0", "e1", "e2", "e3")
    try:
        delivery.run_once()
        wait_for("e1-e3 settled", lambda: delivery.delivered == 3)
        gate.set()  # e0 is refused by a setup error: the destination pauses
        drain(delivery)
        assert delivery.health()["paused"] is True and committed(pipeline) == {}
        clock.advance(61)
        drain(delivery)
    finally:
        gate.set()
        delivery.stop()
    assert sends(dest).count("e0") == 2  # refused, then sent again after the pause
    assert sorted(sends(dest)) == ["e0", "e0", "e1", "e2", "e3"]  # the others once
    assert sorted(platform.accepted) == ["e0", "e1", "e2", "e3"]
    assert committed(pipeline) == end_positions(pipeline) and dead(pipeline) == {}


def test_a_crash_with_requests_out_resends_nothing_to_a_platform_that_cannot_deduplicate(
    pipeline: Pipeline, clock: ManualClock, platform: GatedPlatform
) -> None:
    gate = threading.Event()
    platform.gates = {"e0": gate}
    platform.faults = {"e0": Answer(500)}  # answered only after the crash: never read
    first = runner(pipeline, clock, one_per_request(platform), settings(max_in_flight=4))
    ingest(pipeline, clock, "e0", "e1", "e2", "e3")
    try:
        first.run_once()
        wait_for("e1-e3 settled", lambda: first.delivered == 3)
        first.run_once()  # notes the ended requests: a SIGKILL from here on loses nothing
        markers = {e.event_id: done for e, done in pipeline.deadletters.in_flight("tiny")}
        assert markers == {"e0": False, "e1": True, "e2": True, "e3": True}
        first.stop(grace_secs=0.1)  # e0 still out: abandoned, nothing committed
        assert committed(pipeline) == {}
        dest = one_per_request(platform)
        again = runner(pipeline, clock, dest, settings(max_in_flight=4))
        try:
            drain(again)
        finally:
            again.stop()
    finally:
        gate.set()
    assert dest.built == []  # e1-e3 were delivered: passed over; e0's fate is unknown
    assert dead(pipeline) == {"e0": unknown_fate_reason("tiny")}
    assert sorted(platform.accepted) == ["e1", "e2", "e3"]
    assert committed(pipeline) == end_positions(pipeline)
    assert pipeline.deadletters.in_flight("tiny") == []


def test_pacing_keeps_one_request_at_a_time_and_ga4_defaults_to_many(
    pipeline: Pipeline, clock: ManualClock, platform: GatedPlatform
) -> None:
    sink = AlertSink("ops", f"{platform.base_url}/events", ad_platform=False,
                     min_interval_secs=1.0)  # fmt: skip
    paced = runner(pipeline, clock, sink, slack_settings(max_in_flight=8))
    paced.stop()
    assert paced.max_in_flight == 1
    table = Ga4Settings(name="ga", measurement_id="G-X", api_secret_env="S")
    assert table.max_in_flight == 32 and settings().max_in_flight == 1


def test_while_the_circuit_is_open_only_one_trial_request_goes_out(
    pipeline: Pipeline, clock: ManualClock, platform: GatedPlatform
) -> None:
    ids = [f"e{i}" for i in range(8)]
    platform.plan = [Answer(503)] * 8  # the circuit opens on two failing requests in a row
    dest = one_per_request(platform, dedupes=True)
    table = settings(max_in_flight=4, breaker_threshold=2, breaker_cooldown_secs=30)
    # Backoff waits do not move the clock here: the circuit stays open until the test
    # moves it.
    delivery = runner(pipeline, clock, dest, table, sleep=lambda secs: None)
    ingest(pipeline, clock, *ids)
    try:
        delivery.run_once()
        wait_for("the circuit to open", lambda: delivery.health()["circuit"] == "open")
        assert not drain_until_held(delivery)
        held = platform.arrived
        assert delivery.health()["requests_in_flight"] == 0
        with platform.lock:
            platform.plan.clear()  # the platform is back
        platform.gates = {e: threading.Event() for e in ids}
        clock.advance(31)
        delivery.run_once()  # half-open: one trial
        assert delivery.health()["requests_in_flight"] == 1
        wait_for("the trial", lambda: len(platform.waiting) == 1)
        assert platform.inside == 1 and platform.arrived == held + 1
        for gate in platform.gates.values():
            gate.set()
        drain(delivery)
    finally:
        for gate in platform.gates.values():
            gate.set()
        delivery.stop()
    assert delivery.health()["circuit"] == "closed"
    assert sorted(platform.accepted) == ids and dead(pipeline) == {}


def drain_until_held(delivery: DeliveryRunner) -> bool:
    while delivery.run_once():
        pass
    return delivery.flush()


# -- requests whose fate is unknown -----------------------------------------------------------


@pytest.mark.parametrize("fault", [Slow(3.0), After(Hangup())], ids=["timeout", "dropped"])
def test_an_unanswered_request_is_dead_lettered_not_resent_where_the_platform_cannot_deduplicate(
    pipeline: Pipeline, clock: ManualClock, platform: GatedPlatform, fault: Slow | After
) -> None:
    platform.plan = [fault]
    dest = one_per_request(platform)
    delivery = runner(pipeline, clock, dest, settings(timeout_secs=0.5))
    ingest(pipeline, clock, "e1", "e2")
    try:
        drain(delivery)
    finally:
        delivery.stop()
    assert sends(dest) == ["e1", "e2"]  # e1 once: not sent again
    (answer,) = dead(pipeline).values()
    assert "e1" in dead(pipeline) and "not resent" in answer and "cannot deduplicate" in answer
    assert committed(pipeline) == end_positions(pipeline)
    assert metric(pipeline, "convtrack_deliver_dead_lettered_total", destination="tiny") == 1


@pytest.mark.parametrize("fault", [Slow(3.0), After(Hangup())], ids=["timeout", "dropped"])
def test_an_unanswered_request_is_resent_where_the_platform_deduplicates(
    pipeline: Pipeline, clock: ManualClock, platform: GatedPlatform, fault: Slow | After
) -> None:
    platform.plan = [fault]
    dest = one_per_request(platform, dedupes=True)
    delivery = runner(pipeline, clock, dest, settings(timeout_secs=0.5))
    ingest(pipeline, clock, "e1")
    try:
        drain(delivery)
    finally:
        delivery.stop()
    assert sends(dest) == ["e1", "e1"] and dead(pipeline) == {}


def test_a_refused_connection_sent_nothing_and_is_retried(
    pipeline: Pipeline, clock: ManualClock
) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    dest = TinyDestination("tiny", f"http://127.0.0.1:{port}/events", dedupes=False)
    delivery = runner(pipeline, clock, dest, settings(max_attempts=3, breaker_threshold=10))
    ingest(pipeline, clock, "e1")
    try:
        drain(delivery)
    finally:
        delivery.stop()
    assert sends(dest) == ["e1"] * 3  # every attempt made
    (row,) = pipeline.deadletters.items("tiny")
    assert row.attempts == 3 and "ConnectError" in row.last_answer
    assert "not resent" not in row.last_answer


def test_a_batch_waits_from_its_first_events_processing_not_from_its_reading(
    pipeline: Pipeline, clock: ManualClock, platform: GatedPlatform
) -> None:
    dest = TinyDestination("tiny", f"{platform.base_url}/events")
    delivery = runner(pipeline, clock, dest, settings(batch_max_wait_secs=10))
    ingest(pipeline, clock, "e1")
    try:
        clock.advance(6)  # read 6 s after it was processed (a request was out meanwhile)
        delivery.run_once()
        assert dest.built == []  # 6 s < 10 s: still waiting for more
        clock.advance(4)
        delivery.run_once()  # 10 s since processing (only 4 since reading): due
        assert dest.built == [["e1"]]
    finally:
        delivery.stop()


def test_a_circuit_opening_with_batches_still_buffered_holds_them_until_it_closes(
    pipeline: Pipeline, clock: ManualClock, platform: GatedPlatform
) -> None:
    ids = [f"e{i}" for i in range(6)]
    # Both first requests fail (a success beside them would close the circuit again).
    platform.plan = [Answer(500), Answer(500)]
    dest = one_per_request(platform, dedupes=True)
    table = settings(max_in_flight=2, max_attempts=1, breaker_threshold=1,
                     breaker_cooldown_secs=30)  # fmt: skip
    delivery = runner(pipeline, clock, dest, table)
    ingest(pipeline, clock, *ids)
    try:
        assert not drain_until_held(delivery)  # returns, holding what is buffered
        assert delivery.health()["circuit"] == "open" and committed(pipeline) != end_positions(
            pipeline
        )
        clock.advance(31)
        drain(delivery)
    finally:
        delivery.stop()
    failed = list(dead(pipeline))
    assert sorted(platform.accepted + failed) == ids and len(set(platform.accepted)) == 4
    assert committed(pipeline) == end_positions(pipeline)
