"""The calling side both clients share: ``track``, ``identify`` and ``page``.

Each builds and encodes the event in the caller's thread, then hands it to the
client's ``_enqueue``, which never blocks and never raises.
"""

from __future__ import annotations

import datetime as dt
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

from convtrack_sdk._dispatch import Dispatcher
from convtrack_sdk._events import EventFactory, QueuedEvent
from convtrack_sdk._outcome import Rejection
from convtrack_sdk._retry import RetryPolicy
from convtrack_sdk._stats import ClientStats, Counters

DEFAULT_ENDPOINT = "http://127.0.0.1:8080"
MAX_BATCH_EVENTS = 500  # the server's limits for one POST /v1/batch
MAX_BATCH_BYTES = 512 * 1024
# identify traits that are the contract's ``user`` fields (hashed on arrival); the
# other traits go to properties.
USER_FIELDS = frozenset(
    {"email", "phone", "first_name", "last_name", "city", "state", "zip", "country",
     "external_id", "client_ip", "user_agent", "fbc", "fbp"}
)  # fmt: skip


class Settings:
    """Checked constructor arguments common to both clients."""

    def __init__(
        self,
        *,
        max_batch_size: int,
        max_batch_bytes: int,
        flush_interval_secs: float,
        max_queue_size: int,
        timeout_secs: float,
    ) -> None:
        if not 1 <= max_batch_size <= MAX_BATCH_EVENTS:
            raise ValueError(f"max_batch_size must be 1 to {MAX_BATCH_EVENTS}")
        if not 1024 <= max_batch_bytes <= MAX_BATCH_BYTES:
            raise ValueError(f"max_batch_bytes must be 1024 to {MAX_BATCH_BYTES}")
        if flush_interval_secs <= 0 or timeout_secs <= 0:
            raise ValueError("flush_interval_secs and timeout_secs must be positive")
        if max_queue_size < 1:
            raise ValueError("max_queue_size must be at least 1")
        self.max_batch_size = max_batch_size
        self.max_batch_bytes = max_batch_bytes
        self.flush_interval_secs = flush_interval_secs
        self.max_queue_size = max_queue_size
        self.timeout_secs = timeout_secs


class TrackingApi(ABC):
    def _setup(
        self,
        settings: Settings,
        *,
        retry: RetryPolicy,
        client_id: str | None,
        on_reject: Callable[[Rejection], None] | None,
    ) -> None:
        self._settings = settings
        self._counters = Counters()
        self._events = EventFactory(client_id or str(uuid.uuid4()), settings.max_batch_bytes)
        self._dispatcher = Dispatcher(
            self._counters,
            retry,
            max_batch_events=settings.max_batch_size,
            max_batch_bytes=settings.max_batch_bytes,
            on_reject=on_reject,
        )

    @property
    def client_id(self) -> str:
        """Sent as ``context.client_id`` beside ``context.client_seq`` in every event."""
        return self._events.client_id

    @property
    def stats(self) -> ClientStats:
        return self._counters.snapshot(self._queued())

    @abstractmethod
    def _queued(self) -> int: ...

    @abstractmethod
    def _enqueue(self, event: QueuedEvent) -> None: ...

    def track(
        self,
        event_name: str,
        *,
        user_id: str | None = None,
        session_id: str | None = None,
        value: int | None = None,
        revenue: Decimal | str | int | float | None = None,
        currency: str | None = None,
        campaign_id: str | None = None,
        properties: Mapping[str, Any] | None = None,
        context: Mapping[str, Any] | None = None,
        user: Mapping[str, str] | None = None,
        event_id: str | None = None,
        timestamp: dt.datetime | None = None,
        conversion_token: str | None = None,
        consent: Mapping[str, bool] | None = None,
    ) -> str:
        """Queue one event and return its ``event_id`` (a new UUID unless given).

        Money is ``value`` in integer minor units (4999) or ``revenue`` in major units
        (``"49.99"``, a Decimal), with ``currency``. Raises ``InvalidEvent`` for an
        event that can never be valid; never for the network or the server.
        """
        event = self._events.build(
            event_name, user_id=user_id, session_id=session_id, value=value,
            revenue=revenue, currency=currency, campaign_id=campaign_id,
            properties=properties, context=context, user=user, event_id=event_id,
            timestamp=timestamp, conversion_token=conversion_token, consent=consent,
        )  # fmt: skip
        self._counters.add("tracked")
        self._enqueue(event)
        return event.event_id

    def identify(
        self,
        user_id: str,
        traits: Mapping[str, Any] | None = None,
        *,
        session_id: str | None = None,
        context: Mapping[str, Any] | None = None,
        event_id: str | None = None,
        timestamp: dt.datetime | None = None,
        consent: Mapping[str, bool] | None = None,
    ) -> str:
        """An ``identify`` event: contact traits (email, phone, …) become ``user`` fields,
        hashed by the server on arrival; the other traits go to ``properties``."""
        traits = dict(traits or {})
        user = {k: str(v) for k, v in traits.items() if k in USER_FIELDS and v is not None}
        rest = {k: v for k, v in traits.items() if k not in USER_FIELDS}
        return self.track(
            "identify", user_id=user_id, session_id=session_id, properties=rest or None,
            context=context, user=user or None, event_id=event_id, timestamp=timestamp,
            consent=consent,
        )  # fmt: skip

    def page(
        self,
        url: str,
        *,
        user_id: str | None = None,
        session_id: str | None = None,
        name: str | None = None,
        referrer: str | None = None,
        campaign_id: str | None = None,
        properties: Mapping[str, Any] | None = None,
        context: Mapping[str, Any] | None = None,
        event_id: str | None = None,
        timestamp: dt.datetime | None = None,
        consent: Mapping[str, bool] | None = None,
    ) -> str:
        """A ``page_view`` of ``url`` (its UTM parameters and click ids are read by the
        server); ``name`` goes to ``properties.name``."""
        page_context = {**(context or {}), "page_url": url}
        if referrer is not None:
            page_context["referrer"] = referrer
        props = dict(properties or {})
        if name is not None:
            props["name"] = name
        return self.track(
            "page_view", user_id=user_id, session_id=session_id, campaign_id=campaign_id,
            properties=props or None, context=page_context, event_id=event_id,
            timestamp=timestamp, consent=consent,
        )  # fmt: skip
