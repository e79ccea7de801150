"""Events for tests of code that extends convtrack: as a client sends them
(``conversion``), and as a destination is handed them (``payload``, ``forwarded``)."""

from __future__ import annotations

import itertools
from typing import Any

import msgspec

from convtrack.deliver.base import Forwarded
from convtrack.deliver.payload import Consent, Payload, rfc3339_ms

_numbers = itertools.count(1)


def conversion(event_id: str | None = None, **fields: Any) -> dict[str, Any]:
    """A ``POST /v1/track`` body of a valid purchase (EUR 12.50 by one user), ``fields``
    replacing or adding members (``timestamp`` in ms, ``consent``, ``context``...)."""
    number = next(_numbers)
    event_id = event_id or f"evt-{number}"
    body: dict[str, Any] = {
        "event_id": event_id,
        "event_name": "Purchase",
        "user_id": f"u-{event_id}",
        "value": 1250,
        "currency": "EUR",
    }
    body.update(fields)
    return body


EVENT_US = 1_796_000_000_000_000


def payload(event_id: str, **fields: Any) -> Payload:
    """A payload of ``event_id`` with every other field unknown or empty, ``fields`` set."""
    event_time_us = fields.pop("event_time_us", EVENT_US)
    base = Payload(
        event_id=event_id, event_name="Purchase", source_event_name="Purchase",
        event_time=rfc3339_ms(event_time_us), event_time_us=event_time_us,
        received_at_us=event_time_us, value=None, currency=None, amount=None,
        campaign_id="(none)", campaign_source=None, campaign_medium=None, device_type="other",
        country_code="ZZ", user_id=None, session_id=None, source="default", page_url=None,
        referrer=None, client_ip=None, user_agent=None, properties={}, user={}, click_ids={},
        consent=Consent(ad_user_data=True, ad_personalization=True, analytics=True),
    )  # fmt: skip
    return msgspec.structs.replace(base, **fields)


def forwarded(event_id: str, partition: int, offset: int, **fields: Any) -> Forwarded:
    """``payload(event_id, **fields)`` at a processed-log position."""
    return Forwarded(event_id, partition, offset, payload(event_id, **fields))
