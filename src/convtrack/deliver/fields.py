"""Fields of the canonical payload as the platforms want them, shared by the destinations'
``request`` modules; and checks of the free-form values (``properties``) they send on."""

from __future__ import annotations

import ipaddress
from typing import Any

from convtrack.deliver.payload import Payload

HOUR_US = 3_600 * 1_000_000
DAY_US = 24 * HOUR_US


def too_old(payload: Payload, now_us: int, window_us: int) -> bool:
    """Whether the event is outside a platform's lateness window at ``now_us``."""
    return now_us - payload.event_time_us > window_us


def event_seconds(payload: Payload) -> int:
    """The event time in whole seconds (Meta, TikTok)."""
    return payload.event_time_us // 1_000_000


def number(value: object) -> float | int | None:
    """A JSON number as given (never a bool, which Python counts as an int)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return value


def ip_address(value: str | None) -> str | None:
    """The client IP as given, when it is one (contexts are not checked on arrival)."""
    if value is None:
        return None
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return None
    return value


def identifier(value: object) -> str | None:
    """An id given as a string or an integer (never a bool), as a string."""
    if not isinstance(value, str | int) or isinstance(value, bool):
        return None
    return str(value)


def purchase_fields(payload: Payload) -> dict[str, Any]:
    """What Meta's ``custom_data`` and TikTok's ``properties`` share: ``value`` (major
    units) and ``currency``, ``order_id``, and ``content_type`` when it is one they know."""
    given = payload.properties
    out: dict[str, Any] = {}
    if payload.amount is not None and payload.currency:
        out["value"] = float(payload.amount)
        out["currency"] = payload.currency
    order_id = identifier(given.get("order_id"))
    if order_id:
        out["order_id"] = order_id
    if given.get("content_type") in ("product", "product_group"):
        out["content_type"] = given["content_type"]
    return out
