"""When the cold store tries a failing lake again, and how soon it notices the lake is back.

A failing flush is retried with backoff (0.5 s doubling to 30 s), so a lake
that stays down is not hammered with whole flushes. Backoff alone makes
readiness lag recovery, though: a disk freed just after a 30 s wait began
would show ``cold`` unhealthy for up to 30 s more. So while the lake fails,
a cheap probe (write and delete a small object, ``ColdStore.probe``) runs every
``probe_interval_secs``; when it succeeds the full retry runs at once, and
readiness follows its outcome within a probe interval of the recovery.

A probe can be blind to a fault (a small write that fits where a flush does
not): when a retry that a probe started fails too, probes start no more
retries until one of them fails (it sees the fault again), so the backoff
still bounds how often whole flushes are tried.
"""

from __future__ import annotations

from collections.abc import Callable

from convtrack.clock import Clock
from convtrack.errors import ConvtrackError

FIRST_DELAY_SECS = 0.5
MAX_DELAY_SECS = 30.0
PROBE_INTERVAL_SECS = 1.0


class LakeRetry:
    """The retry state of one cold-store runner; every time from ``clock.monotonic()``."""

    def __init__(
        self,
        clock: Clock,
        probe: Callable[[], None],
        *,
        first_delay_secs: float = FIRST_DELAY_SECS,
        max_delay_secs: float = MAX_DELAY_SECS,
        probe_interval_secs: float = PROBE_INTERVAL_SECS,
    ) -> None:
        self._clock = clock
        self._probe = probe
        self._first_delay = first_delay_secs
        self._max_delay = max_delay_secs
        self._probe_interval = probe_interval_secs
        self._delay = first_delay_secs
        self._retry_at = 0.0
        self._probe_at = 0.0
        self._probe_started = False  # the round running now was started by a probe
        self._probe_blind = False  # a probe-started round failed: probes cannot see this fault
        self.last_error: str | None = None
        self.probes = 0

    def succeeded(self) -> None:
        self.last_error = None
        self._delay = self._first_delay
        self._probe_started = self._probe_blind = False

    def failed(self, error: str) -> float:
        """Record a failed round; returns the backoff before the next full retry."""
        now = self._clock.monotonic()
        delay = self._delay
        self.last_error = error
        self._retry_at = now + delay
        self._probe_at = now + min(self._probe_interval, delay)
        self._delay = min(delay * 2, self._max_delay)
        self._probe_blind = self._probe_blind or self._probe_started
        self._probe_started = False
        return delay

    def due(self) -> bool:
        """Whether the next full round should run now; probes the lake when it is time."""
        if self.last_error is None:
            return True
        now = self._clock.monotonic()
        if now >= self._retry_at:
            self._probe_started = False
            return True
        if now < self._probe_at:
            return False
        self._probe_at = now + self._probe_interval
        self.probes += 1
        try:
            self._probe()
        except ConvtrackError:
            self._probe_blind = False  # the probe meets the fault: its success will mean it
            return False
        if self._probe_blind:
            return False
        self._probe_started = True
        return True

    def wait_secs(self) -> float:
        """How long to wait before asking ``due`` again."""
        if self.last_error is None:
            return 0.0
        now = self._clock.monotonic()
        return max(0.0, min(self._retry_at, self._probe_at) - now)
