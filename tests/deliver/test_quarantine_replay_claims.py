"""A destination's quarantine replay cut off by a crash after its request went out: sent
again after the lease only where the platform deduplicates (ADR 0008)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from convtrack.clock import ManualClock
from convtrack.deliver.base import Forwarded, Outcome
from convtrack.deliver.keeper import REPLAY_CLAIM_NOTE
from convtrack.runtime.embedded import Pipeline
from convtrack.store.quarantine.base import CLAIM_LEASE_SECS
from convtrack.testing.standins.base import Answer
from tests.support.deliverkit import TinyDestination, TinyPlatform, drain, ingest, runner, settings


class Crash(BaseException):
    """Stands for a SIGKILL: nothing after it runs (no settling, no cleanup)."""


class TripsOn(TinyDestination):
    """A destination with a bug that shows for one event while selecting it: quarantined."""

    def __init__(self, url: str, trips_on: str, *, dedupes: bool) -> None:
        super().__init__("tiny", url, dedupes=dedupes)
        self.trips_on = trips_on

    def skip_reason(self, event: Forwarded, now_us: int) -> str | None:
        if event.event_id == self.trips_on:
            raise KeyError("order_id")
        return super().skip_reason(event, now_us)


class DiesOnAnswer(TinyDestination):
    """The platform takes the replay and answers; the process dies before reading it."""

    def read(
        self, events: Sequence[Forwarded], status: int, headers: dict[str, str], body: bytes
    ) -> Outcome:
        raise Crash


def quarantine_one(pipeline: Pipeline, clock: ManualClock, url: str, *, dedupes: bool) -> None:
    ingest(pipeline, clock, "q0", "q1")
    delivery = runner(pipeline, clock, TripsOn(url, "q1", dedupes=dedupes), settings(),
                      quarantine=pipeline.backends.quarantine)  # fmt: skip
    try:
        drain(delivery)
    finally:
        delivery.stop()
    (row,) = pipeline.backends.quarantine.items("deliver")
    assert (row.event.scope, row.event.event_id) == ("tiny", "q1")


@pytest.mark.parametrize("dedupes", [False, True])
def test_a_replay_cut_off_after_sending_is_sent_again_only_where_the_platform_dedupes(
    pipeline: Pipeline, clock: ManualClock, platform: TinyPlatform, dedupes: bool
) -> None:
    url = f"{platform.base_url}/events"
    store = pipeline.backends.quarantine
    quarantine_one(pipeline, clock, url, dedupes=dedupes)
    assert platform.received() == ["q0"]
    assert store.mark_replay("deliver") == 1
    clock.advance(2.0)
    dying = runner(pipeline, clock, DiesOnAnswer("tiny", url, dedupes=dedupes), settings(),
                   quarantine=store)  # fmt: skip
    with pytest.raises(Crash):
        drain(dying)
    dying.stop()  # only closes its connections: the "dead" process settled nothing
    assert platform.received() == ["q0", "q1"]
    # Another process runs the destination once the lease has lapsed.
    clock.advance(CLAIM_LEASE_SECS + 1)
    dest = TinyDestination("tiny", url, dedupes=dedupes)
    again = runner(pipeline, clock, dest, settings(), quarantine=store)
    try:
        drain(again)
    finally:
        again.stop()
    if dedupes:  # sent again: the platform drops the copy by event id
        assert dest.built == [["q1"]] and platform.received() == ["q0", "q1", "q1"]
        assert store.total() == 0
    else:  # never sent twice: kept, unqueued, for an operator to check
        assert dest.built == [] and platform.received() == ["q0", "q1"]
        (row,) = store.items("deliver")
        assert not row.replay and row.event.error.startswith(REPLAY_CLAIM_NOTE)
        assert "order_id" in row.event.error  # why it was quarantined, still shown
        # Queued again by an operator, it is sent.
        assert store.mark_replay("deliver") == 1
        clock.advance(2.0)
        last = runner(pipeline, clock, dest, settings(), quarantine=store)
        try:
            drain(last)
        finally:
            last.stop()
        assert platform.received() == ["q0", "q1", "q1"] and store.total() == 0


def test_a_replay_held_before_its_first_request_is_given_back(
    pipeline: Pipeline, clock: ManualClock, platform: TinyPlatform
) -> None:
    url = f"{platform.base_url}/events"
    store = pipeline.backends.quarantine
    quarantine_one(pipeline, clock, url, dedupes=False)
    assert store.mark_replay("deliver") == 1
    clock.advance(2.0)
    platform.plan = [Answer(401, body=b'{"error":"bad token"}')]  # a setup fault: a pause
    paused = runner(pipeline, clock, TinyDestination("tiny", url, dedupes=False), settings(),
                    quarantine=store)  # fmt: skip
    try:
        drain(paused)
    finally:
        paused.stop()
    # Refused, not taken: queued again at once, as it was.
    (row,) = store.items("deliver")
    assert row.replay and not row.event.error.startswith(REPLAY_CLAIM_NOTE)
    (claimed,) = store.claim(["deliver"], "tiny", 10, clock.now_us())
    assert claimed.id == row.id
