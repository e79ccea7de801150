"""Events in the server's native shape, numbered per client and encoded once, at the call.

Encoding where ``track`` is called means a property that is not JSON fails in the
caller's code (``TypeError``), not later in the worker, and the queue holds bytes
that never change between retries: a resent event is the same event.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import uuid
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, NamedTuple

from convtrack_sdk._errors import InvalidEvent
from convtrack_sdk._money import check_minor_units, normalize_currency, to_minor_units
from convtrack_sdk._version import VERSION

LIBRARY = {"name": "convtrack-sdk-python", "version": VERSION}
# '{"batch":[' + ']}': what a batch body adds around its events.
BATCH_OVERHEAD = len(b'{"batch":[]}')
MAX_ID_CHARS = 128


class QueuedEvent(NamedTuple):
    event_id: str
    seq: int
    data: bytes  # the event's JSON, as sent


def _json_default(value: object) -> object:
    if isinstance(value, dt.datetime):
        return format_timestamp(value)
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)  # exact, where a float would not be
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, set | frozenset):
        return sorted(value, key=str)
    raise TypeError(f"{type(value).__name__} is not JSON: {value!r}")


def encode(event: Mapping[str, Any]) -> bytes:
    return json.dumps(
        event, separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=_json_default
    ).encode("utf-8")


def format_timestamp(when: dt.datetime) -> str:
    """RFC 3339 in UTC with milliseconds; a naive datetime is ambiguous and refused."""
    if when.tzinfo is None or when.utcoffset() is None:
        raise InvalidEvent("timestamp_invalid", "timestamp must be timezone-aware")
    text = when.astimezone(dt.UTC).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


def _text(field: str, value: object, code: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidEvent(code, f"{field} must be a non-empty string: {value!r}")
    return value


class EventFactory:
    """Builds events for one client: its id and its sequence, 1, 2, 3, … in call order."""

    def __init__(self, client_id: str, max_event_bytes: int) -> None:
        self.client_id = client_id
        self._max_event_bytes = max_event_bytes
        self._lock = threading.Lock()
        self._seq = 0

    def child(self, client_id: str) -> EventFactory:
        return EventFactory(client_id, self._max_event_bytes)

    def build(
        self,
        event_name: str,
        *,
        user_id: str | None,
        session_id: str | None,
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
    ) -> QueuedEvent:
        name = _text("event_name", event_name, "event_name_missing")
        if user_id is None and session_id is None:
            raise InvalidEvent("user_id_missing", "an event needs a user_id or a session_id")
        event: dict[str, Any] = {
            "event_id": str(uuid.uuid4()) if event_id is None else event_id,
            "event_name": name,
        }
        chosen = event["event_id"]
        if not isinstance(chosen, str) or not 0 < len(chosen) <= MAX_ID_CHARS:
            raise InvalidEvent("event_id_invalid", "event_id must be 1 to 128 characters")
        if user_id is not None:
            event["user_id"] = _text("user_id", user_id, "user_id_invalid")
        if session_id is not None:
            event["session_id"] = _text("session_id", session_id, "session_id_invalid")
        when = dt.datetime.now(dt.UTC) if timestamp is None else timestamp
        event["timestamp"] = format_timestamp(when)
        event.update(_money(value, revenue, currency))
        optional = {
            "campaign_id": campaign_id,
            "conversion_token": conversion_token,
            "properties": None if properties is None else dict(properties),
            "user": None if user is None else dict(user),
            "consent": None if consent is None else dict(consent),
        }
        event.update({k: v for k, v in optional.items() if v is not None})
        # Numbered and encoded under one lock, so that an event refused here (too large,
        # not JSON) leaves no gap in the sequence: gaps are for events lost after the call.
        with self._lock:
            seq = self._seq + 1
            event["context"] = {
                **(context or {}),
                "client_id": self.client_id,
                "client_seq": seq,
                "library": LIBRARY,
            }
            try:
                data = encode(event)
            except ValueError as exc:  # NaN, infinity, a circular reference
                raise InvalidEvent("properties_invalid", str(exc)) from None
            if len(data) + BATCH_OVERHEAD > self._max_event_bytes:
                raise InvalidEvent(
                    "event_too_large",
                    f"the event is {len(data)} bytes encoded, over {self._max_event_bytes}",
                )
            self._seq = seq
        return QueuedEvent(event["event_id"], seq, data)


def _money(
    value: int | None, revenue: Decimal | str | int | float | None, currency: str | None
) -> dict[str, Any]:
    if value is not None and revenue is not None:
        raise InvalidEvent("value_ambiguous", "give value (minor units) or revenue, not both")
    if value is None and revenue is None:
        if currency is not None:
            raise InvalidEvent("value_missing", "value is required when currency is present")
        return {}
    if currency is None:
        raise InvalidEvent("currency_missing", "currency is required with a value")
    code = normalize_currency(currency)
    if value is not None:
        return {"value": check_minor_units(value), "currency": code}
    assert revenue is not None
    return {"value": to_minor_units(revenue, code), "currency": code}
