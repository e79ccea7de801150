"""Token buckets: a batch's one-lookup grant equals taking one token per event."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from convtrack.clock import ManualClock
from convtrack.collect.ratelimit import TokenBuckets


@given(
    rate=st.sampled_from([0.0, 0.5, 1.0, 5.0, 10.0]),
    burst=st.integers(min_value=0, max_value=20),
    steps=st.lists(
        st.tuples(st.integers(min_value=0, max_value=30), st.floats(min_value=0, max_value=3)),
        max_size=12,
    ),
)
def test_take_up_to_grants_what_single_takes_at_that_instant_would(
    rate: float, burst: int, steps: list[tuple[int, float]]
) -> None:
    batch_clock, single_clock = ManualClock(), ManualClock()
    batched = TokenBuckets(rate, burst, batch_clock)
    single = TokenBuckets(rate, burst, single_clock)
    for count, pause_secs in steps:
        granted = batched.take_up_to("user", count)
        one_by_one = sum(single.take("user") == 0.0 for _ in range(count))
        assert granted == one_by_one
        batch_clock.advance(pause_secs)
        single_clock.advance(pause_secs)


def test_a_refused_take_says_how_long_until_a_token() -> None:
    clock = ManualClock()
    buckets = TokenBuckets(2.0, 2, clock)
    assert buckets.take_up_to("u", 5) == 2
    assert buckets.take("u") == 0.5
    clock.advance(0.5)
    assert buckets.take("u") == 0.0
