"""When to send again: exponential backoff with full jitter, or the server's Retry-After."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class RetryPolicy:
    """``max_retries`` resends of one request after its first try, then its events are
    dropped (counted as ``retries_exhausted`` and logged). Without a Retry-After the
    wait before resend ``n`` (0-based) is uniform in ``[0, min(max_delay_secs,
    base_delay_secs * 2**n)]`` ("full jitter", so many clients do not resend in step);
    a Retry-After is honoured as given, up to ``max_retry_after_secs``."""

    max_retries: int = 10
    base_delay_secs: float = 0.5
    max_delay_secs: float = 30.0
    max_retry_after_secs: float = 300.0

    def __post_init__(self) -> None:
        if self.max_retries < 0 or self.base_delay_secs < 0 or self.max_delay_secs < 0:
            raise ValueError("retry settings must not be negative")

    def delay_secs(self, retry: int, retry_after_secs: float | None, rng: random.Random) -> float:
        if retry_after_secs is not None:
            return min(max(retry_after_secs, 0.0), self.max_retry_after_secs)
        cap = min(self.max_delay_secs, self.base_delay_secs * 2.0 ** min(retry, 64))
        return rng.uniform(0.0, cap)
