"""When to try again: backoff with full jitter, and the circuit breaker (pure, no I/O)."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with full jitter: attempt n waits uniform [0, min(cap, base·2^(n-1))].

    Full jitter spreads the retries of many runners that failed together, so a
    recovering platform is not hit by all of them at once.
    """

    base_secs: float
    cap_secs: float

    def ceiling(self, attempt: int) -> float:
        # 2**exponent overflows a float past ~1024; the cap is reached long before.
        return min(self.cap_secs, self.base_secs * 2.0 ** min(attempt - 1, 60))

    def delay(self, attempt: int, rng: random.Random) -> float:
        return rng.uniform(0.0, self.ceiling(attempt))


def next_delay(
    *,
    attempt: int,
    after_secs: float | None,
    throttled: bool,
    transient: Backoff,
    throttle: Backoff,
    rng: random.Random,
) -> float:
    """The wait before the next attempt: the platform's own ``Retry-After`` wins."""
    if after_secs is not None:
        return after_secs
    return (throttle if throttled else transient).delay(attempt, rng)


class Breaker:
    """Opens after ``threshold`` failing requests in a row; one trial after ``cooldown_secs``.

    A request fails when at least ``failure_ratio`` of its events failed. While
    open nothing is sent; once the cooldown is over the next request is the
    trial (half-open): success closes the circuit, failure opens it again.
    """

    def __init__(self, *, failure_ratio: float, threshold: int, cooldown_secs: float) -> None:
        self._failure_ratio = failure_ratio
        self._threshold = threshold
        self._cooldown_secs = cooldown_secs
        self._failures_in_row = 0
        self._open_until: float | None = None

    @property
    def is_open(self) -> bool:
        """Open or half-open: not closed yet."""
        return self._open_until is not None

    def state(self, now: float) -> str:
        if self._open_until is None:
            return "closed"
        return "open" if now < self._open_until else "half_open"

    def wait_secs(self, now: float) -> float:
        """How long nothing may be sent (0: send)."""
        return 0.0 if self._open_until is None else max(0.0, self._open_until - now)

    def record(self, failed_ratio: float, now: float) -> str | None:
        """Count one answered request; returns ``"opened"`` or ``"closed"`` on a change."""
        if failed_ratio < self._failure_ratio:
            self._failures_in_row = 0
            if self._open_until is not None:
                self._open_until = None
                return "closed"
            return None
        self._failures_in_row += 1
        if self._failures_in_row < self._threshold:
            return None
        was_open = self._open_until is not None
        self._open_until = now + self._cooldown_secs
        return None if was_open else "opened"
