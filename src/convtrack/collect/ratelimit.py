"""Token buckets per user (and optionally per key), in memory, with bounded size."""

from __future__ import annotations

import math

from convtrack.clock import Clock

_MAX_BUCKETS = 200_000


class TokenBuckets:
    """``rate`` tokens per second up to ``burst``; 0 rate means unlimited."""

    def __init__(self, rate: float, burst: int, clock: Clock) -> None:
        self.rate = rate
        self.burst = float(burst if burst > 0 else max(1, math.ceil(rate)))
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}

    def take(self, key: str, count: int = 1) -> float:
        """Take ``count`` tokens; return 0 when granted, else seconds until they would be."""
        if self.rate <= 0:
            return 0.0
        now = self._clock.monotonic()
        tokens = self._refilled(key, now)
        if tokens >= count:
            self._keep(key, tokens - count, now)
            return 0.0
        self._keep(key, tokens, now)
        return (count - tokens) / self.rate

    def take_up_to(self, key: str, count: int) -> int:
        """Take as many of ``count`` tokens as there are; return how many were taken.

        The same as ``count`` calls of ``take(key)`` at one instant, in one lookup
        (a batch's events of one user)."""
        if self.rate <= 0:
            return count
        now = self._clock.monotonic()
        tokens = self._refilled(key, now)
        granted = min(count, int(tokens))
        self._keep(key, tokens - granted, now)
        return granted

    def _refilled(self, key: str, now: float) -> float:
        tokens, last = self._buckets.get(key, (self.burst, now))
        return min(self.burst, tokens + (now - last) * self.rate)

    def _keep(self, key: str, tokens: float, now: float) -> None:
        self._buckets[key] = (tokens, now)
        if len(self._buckets) > _MAX_BUCKETS:
            self._evict_full(now)

    def _evict_full(self, now: float) -> None:
        """Forget buckets that have refilled: they behave exactly like new ones."""
        refill_secs = self.burst / self.rate
        self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < refill_secs}


def retry_after_secs(wait: float) -> int:
    return max(1, math.ceil(wait))
