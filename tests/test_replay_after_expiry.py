"""A quarantined event replayed after the hot store forgot what it needs (found by the
pipeline property test; known bug, not fixed yet).

The processor forgets a conversion token's claim, and an event id's dedup entry, once
the newest receive time it processed is an hour past their end
(``ProcessorRunner._maybe_expire``; on Redis the keys' TTLs do the same). A poison event
stays in the quarantine as long as it takes to fix it; replayed later than that, it meets
no claim and is counted, although another event with its token (or another copy of its
id, within the window) was counted meanwhile. The expected answer (counted once) is
what this test asserts, so it is marked ``xfail(strict=True)``: it starts passing, and
must then lose the mark, once expiry keeps what the quarantine's events still need.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from convtrack import failpoints
from convtrack.clock import ManualClock
from convtrack.model.event import Envelope
from convtrack.model.tokens import issue_token
from tests.inprocess import make_pipeline
from tests.processorkit import append_events, fresh_runner, run_until_idle

T0 = 1_796_000_000_000_000
HOUR = 3_600_000_000
TOKEN = issue_token(b"replay-secret", "order1", "default", T0, 2 * 86_400, nonce="0" * 32)


def purchase(event_id: str, at_us: int, token: str | None, campaign: str = "spring") -> Envelope:
    return Envelope(
        event_id=event_id, source="default", event_name="Purchase", event_time_us=at_us,
        received_at_us=at_us, user_id=f"u-{event_id}", value=100, currency="USD",
        campaign_id=campaign, conversion_token=token,
    )  # fmt: skip


LATE = pytest.mark.xfail(
    strict=True, reason="known bug: a late replay of a quarantined event outlives the token claim"
)


@pytest.mark.parametrize("days_later", [0, pytest.param(3, marks=LATE)])
def test_a_replay_does_not_count_a_token_twice(tmp_path: Path, days_later: int) -> None:
    """Replayed at once, the token's claim is there and the replay is a duplicate (the
    control); replayed three days later, the claim is gone (the bug)."""
    clock = ManualClock(start_us=T0)
    pipeline = make_pipeline(tmp_path / "data", clock)
    try:
        runner = fresh_runner(pipeline, clock, quarantine=True)
        with failpoints.poison("enrich", "first"):
            append_events(pipeline, [purchase("first", T0, TOKEN.token)])
            append_events(pipeline, [purchase("second", T0 + HOUR, TOKEN.token)])
            run_until_idle(runner)
        assert pipeline.backends.quarantine.total() == 1
        # Days on: the token's claim ended (T0 + 2 days) more than an hour ago.
        clock.advance(days_later * 86_400)
        append_events(
            pipeline, [purchase("later", T0 + days_later * 86_400_000_000, None, "other")]
        )
        run_until_idle(runner)
        clock.advance(20)  # the runner's expiry is due
        run_until_idle(runner)
        pipeline.backends.quarantine.mark_replay()
        clock.advance(2)
        run_until_idle(runner)  # appends the replayed event
        run_until_idle(runner)  # processes it
        runner.stop(drain_secs=0.0)
        assert pipeline.backends.quarantine.total() == 0
        day = "2026-11-30"
        # "first" and "second" carry one order's token: it counts once, ever.
        assert pipeline.hot.conversions("spring", day).conversions == 1
    finally:
        pipeline.close()
