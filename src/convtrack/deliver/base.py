"""The delivery port: a destination turns events into requests and answers into outcomes.

A destination is pure: ``skip_reason`` (is this event sendable at all, e.g.
inside the platform's lateness window), ``build`` (events → one request) and
``read`` (the platform's answer → one outcome). Outcomes form a closed set;
only the runner decides backoff, jitter, pausing, the circuit breaker and
dead-lettering from them.

Every destination reads the same canonical payload (``Forwarded.payload``, a
``deliver.payload.Payload`` built by ``forward_payload``): contact fields only
as their SHA-256 hashes, one variant per platform rule.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import msgspec

from convtrack.deliver.payload import Payload


class Delivered(msgspec.Struct, frozen=True, tag=True):
    """Every event of the request was accepted (or the platform already had it)."""


class Retry(msgspec.Struct, frozen=True, tag=True):
    """The whole request failed for a passing reason; send it again later.

    ``after_secs``: the platform's own wait (Retry-After), which wins.
    """

    after_secs: float | None
    reason: str


class Throttled(msgspec.Struct, frozen=True, tag=True):
    """The platform asked us to slow down (429, quota codes): send the whole request
    again later, backing off on the throttling policy instead of the transient one.

    ``after_secs``: the platform's own wait (Retry-After), which wins.
    """

    after_secs: float | None
    reason: str


class RetryPartial(msgspec.Struct, frozen=True, tag=True):
    """Some rows failed: those in ``event_ids`` are sent again, those in ``rejected``
    are dead-lettered with their reason; every other event of the request was
    delivered."""

    event_ids: list[str]
    reason: str
    after_secs: float | None = None
    rejected: dict[str, str] = msgspec.field(default_factory=dict)


class Reject(msgspec.Struct, frozen=True, tag=True):
    """The request failed for good: its events are dead-lettered."""

    reason: str


class SetupFault(msgspec.Struct, frozen=True, tag=True):
    """The fault is ours, not the events' (401/403: a token expired, a permission is
    missing). The runner keeps the events, pauses the destination and raises an alert
    instead of dead-lettering them; the attempt is not counted."""

    reason: str


Outcome = Delivered | Retry | Throttled | RetryPartial | Reject | SetupFault


class Forwarded(msgspec.Struct, frozen=True):
    """One event as forwarded: its processed-log position and its canonical payload."""

    event_id: str
    source_partition: int
    source_offset: int
    payload: Payload


class OutboundRequest(msgspec.Struct, frozen=True):
    method: str
    url: str
    headers: dict[str, str]
    body: bytes


class Destination(ABC):
    """One configured destination: pure request building and answer reading.

    Class attributes a destination sets:

    - ``max_batch_events``: the platform's limit of events per request;
    - ``ad_platform``: consent gates it (an event whose ``ad_user_data`` is
      false is never sent to it); webhooks and Slack are not ad platforms;
    - ``dedupes_on_event_id``: the platform drops a second copy of an event
      we send (by our event id, order id or message id). When false, a batch
      whose send was interrupted by a crash is dead-lettered for review
      instead of being sent again;
    - ``min_interval_secs``: the least time between two requests (Slack: 1 s).
    """

    name: str
    max_batch_events: int = 1000
    ad_platform: bool = True
    dedupes_on_event_id: bool = True
    min_interval_secs: float = 0.0

    def skip_reason(self, event: Forwarded, now_us: int) -> str | None:
        """Why this event must not be sent now (a short stable code), or None.

        Examples: ``too_old`` (outside the platform's lateness window),
        ``no_click_id`` (Google Ads needs one). Checked when the event is read
        and again before every attempt, so an event that ages out while its
        batch is retried is taken out instead of failing the batch.
        """
        return None

    @abstractmethod
    def build(self, events: Sequence[Forwarded], now_us: int) -> OutboundRequest:
        """The request for one batch; the same batch must get the same idempotency id."""

    @abstractmethod
    def read(
        self, events: Sequence[Forwarded], status: int, headers: dict[str, str], body: bytes
    ) -> Outcome:
        """The outcome of one answer to the request built from ``events``
        (headers with lower-case names; ``body`` is at most 64 KiB)."""
