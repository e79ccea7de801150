"""A quarantined event replayed after the hot store forgot its token's claim (found by
the pipeline property test).

The processor forgets a conversion token's claim once the newest receive time it
processed is an hour past the token's end (``ProcessorRunner._maybe_expire``; on Redis
the keys' TTLs do the same). A poison event stays in the quarantine as long as it takes
to fix it; replayed after its token expired, it would meet no claim and be counted
although another event with its token was counted meanwhile. So such a replay is
refused (process/poison.py, ``TOKEN_EXPIRED_AT_REPLAY``): the event stays quarantined
with the reason, and the order counts once.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from convtrack import failpoints
from convtrack.clock import ManualClock
from convtrack.model.event import Envelope
from convtrack.model.tokens import issue_token
from convtrack.process.poison import TOKEN_EXPIRED_AT_REPLAY
from tests.support.inprocess import make_pipeline
from tests.support.processorkit import append_events, fresh_runner, run_until_idle

T0 = 1_796_000_000_000_000
HOUR = 3_600_000_000
TOKEN = issue_token(b"replay-secret", "order1", "default", T0, 2 * 86_400, nonce="0" * 32)


def purchase(event_id: str, at_us: int, token: str | None, campaign: str = "spring") -> Envelope:
    return Envelope(
        event_id=event_id, source="default", event_name="Purchase", event_time_us=at_us,
        received_at_us=at_us, user_id=f"u-{event_id}", value=100, currency="USD",
        campaign_id=campaign, conversion_token=token,
    )  # fmt: skip


@pytest.mark.parametrize("days_later", [0, 3])
def test_a_replay_does_not_count_a_token_twice(tmp_path: Path, days_later: int) -> None:
    """Replayed at once, the token's claim is there and the replay is a duplicate;
    replayed three days later, the token has expired: the replay is refused and the
    event stays quarantined, saying why."""
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
        kept = [row.event for row in pipeline.backends.quarantine.items(None, 10)]
        if days_later == 0:
            assert kept == []
        else:
            assert [(e.event_id, e.error) for e in kept] == [("first", TOKEN_EXPIRED_AT_REPLAY)]
        day = "2026-11-30"
        # "first" and "second" carry one order's token: it counts once, ever.
        assert pipeline.hot.conversions("spring", day).conversions == 1
    finally:
        pipeline.close()
