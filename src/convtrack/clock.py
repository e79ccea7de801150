"""Time, injected: production code asks a clock, tests move a manual one."""

from __future__ import annotations

import threading
import time
from typing import Protocol


class Clock(Protocol):
    def now_us(self) -> int:
        """Microseconds since the Unix epoch, UTC."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (for rates and timeouts)."""
        ...


class SystemClock:
    def now_us(self) -> int:
        return time.time_ns() // 1000

    def monotonic(self) -> float:
        return time.monotonic()


class ManualClock:
    """A clock that only moves when told to; thread-safe."""

    def __init__(self, start_us: int = 1_780_000_000_000_000) -> None:
        self._now_us = start_us
        self._mono = 1000.0
        self._lock = threading.Lock()

    def now_us(self) -> int:
        with self._lock:
            return self._now_us

    def monotonic(self) -> float:
        with self._lock:
            return self._mono

    def advance(self, secs: float) -> None:
        with self._lock:
            self._now_us += int(secs * 1_000_000)
            self._mono += secs
