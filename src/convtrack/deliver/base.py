"""The delivery port: a destination turns events into requests and answers into outcomes.

Outcomes form a closed set; only the dispatcher decides backoff, jitter and
dead-lettering from them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import msgspec


class Delivered(msgspec.Struct, frozen=True, tag=True):
    pass


class Retry(msgspec.Struct, frozen=True, tag=True):
    after_secs: float | None
    reason: str


class RetryPartial(msgspec.Struct, frozen=True, tag=True):
    event_ids: list[str]
    reason: str


class Reject(msgspec.Struct, frozen=True, tag=True):
    reason: str


Outcome = Delivered | Retry | RetryPartial | Reject


class Forwarded(msgspec.Struct, frozen=True):
    """One event as forwarded: its processed-log position and its payload (a JSON object)."""

    event_id: str
    source_partition: int
    source_offset: int
    payload: dict[str, Any]


class OutboundRequest(msgspec.Struct, frozen=True):
    method: str
    url: str
    headers: dict[str, str]
    body: bytes


class Destination(ABC):
    """One configured destination: pure request building and answer reading."""

    name: str

    @abstractmethod
    def build(self, events: Sequence[Forwarded], now_us: int) -> OutboundRequest:
        """The request for one batch; the same batch must get the same idempotency id."""

    @abstractmethod
    def read(self, status: int, headers: dict[str, str], body: bytes) -> Outcome:
        """The outcome of one answer (headers with lower-case names)."""
