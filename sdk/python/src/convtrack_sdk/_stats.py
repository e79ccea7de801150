"""The client's counters: every event ends accepted, rejected or dropped, with a reason."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

# Why an event was dropped (never sent, or given up on), as counted in ``dropped``.
QUEUE_FULL = "queue_full"  # the bounded queue was full when it was tracked
RETRIES_EXHAUSTED = "retries_exhausted"  # the server kept failing past max_retries
REFUSED = "refused"  # 401/403/404/415 …: the key, endpoint or client is wrong
CLOSED = "closed"  # tracked after close(), or still unsent when close() timed out
INTERNAL_ERROR = "internal_error"  # a bug in this package, logged with its traceback


@dataclass(frozen=True)
class ClientStats:
    """A snapshot. ``accepted`` counts events the server made durable (duplicates
    included: the server drops those after accepting them). ``rejected`` counts
    events the server refused as invalid, by code in ``rejected_by_code``."""

    tracked: int
    queued: int  # waiting or in flight now
    accepted: int
    rejected: int
    rejected_by_code: Mapping[str, int] = field(default_factory=dict)
    dropped: Mapping[str, int] = field(default_factory=dict)
    requests: int = 0
    retries: int = 0

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())


class Counters:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """All zero, with a new lock (after a fork the old one may be held for good)."""
        self._lock = threading.Lock()
        self.tracked = 0
        self.accepted = 0
        self.rejected = 0
        self.rejected_by_code: Counter[str] = Counter()
        self.dropped: Counter[str] = Counter()
        self.requests = 0
        self.retries = 0

    def add(self, name: str, n: int = 1) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + n)

    def drop(self, reason: str, n: int = 1) -> None:
        with self._lock:
            self.dropped[reason] += n

    def reject(self, codes: tuple[str, ...]) -> None:
        with self._lock:
            self.rejected += 1
            for code in codes or ("unknown",):
                self.rejected_by_code[code] += 1

    def snapshot(self, queued: int) -> ClientStats:
        with self._lock:
            return ClientStats(
                tracked=self.tracked,
                queued=queued,
                accepted=self.accepted,
                rejected=self.rejected,
                rejected_by_code=MappingProxyType(dict(self.rejected_by_code)),
                dropped=MappingProxyType(dict(self.dropped)),
                requests=self.requests,
                retries=self.retries,
            )
