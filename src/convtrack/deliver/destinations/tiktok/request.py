"""Events to a TikTok Events API 2.0 request, pure (destinations.md §5 and §7).

Contact fields arrive already hashed; TikTok's variants are the phone in
E.164 with its '+' (``phone_e164``), the trimmed lower-case email and
external id. ``ttclid``, ``ttp``, IP and user agent are sent as they are.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from convtrack.deliver.base import Forwarded, OutboundRequest
from convtrack.deliver.fields import event_seconds, identifier, ip_address, number, purchase_fields
from convtrack.deliver.payload import Payload
from convtrack.model.event import text

_encoder = msgspec.json.Encoder(order="deterministic")


def ttp(payload: Payload) -> str | None:
    """The ``_ttp`` cookie: a click id named ``ttp``, else ``properties._ttp``
    (our click ids have no slot for it yet, so senders pass it as a property)."""
    return payload.click_ids.get("ttp") or text(payload.properties.get("_ttp"))


def user(payload: Payload) -> dict[str, Any]:
    given = payload.user
    out: dict[str, Any] = {}
    for key, field in (("email", "email"), ("phone", "phone_e164"), ("external_id", "external_id")):
        if given.get(field):
            out[key] = [given[field]]
    ttclid = payload.click_ids.get("ttclid")
    if ttclid:
        out["ttclid"] = ttclid
    cookie = ttp(payload)
    if cookie:
        out["ttp"] = cookie
    client_ip = ip_address(payload.client_ip)
    if client_ip:
        out["ip"] = client_ip
    if payload.user_agent:
        out["user_agent"] = payload.user_agent
    return out


def contents(items: object) -> list[dict[str, Any]]:
    """``properties.contents`` as TikTok's ``{content_id, content_name, quantity, price}``
    (Meta-style ``id`` and ``item_price`` are read too)."""
    if not isinstance(items, list):
        return []
    out: list[dict[str, Any]] = []
    for item in items:
        if not isinstance(item, dict):
            continue
        item_id = identifier(item.get("content_id", item.get("id")))
        if item_id is None:
            continue
        entry: dict[str, Any] = {"content_id": item_id}
        name = text(item.get("content_name", item.get("name")))
        if name:
            entry["content_name"] = name
        quantity = number(item.get("quantity"))
        if quantity is not None:
            entry["quantity"] = quantity
        price = number(item.get("price", item.get("item_price")))
        if price is not None:
            entry["price"] = price
        out.append(entry)
    return out


def properties(payload: Payload) -> dict[str, Any]:
    out = purchase_fields(payload)
    items = contents(payload.properties.get("contents"))
    if items:
        out["contents"] = items
    return out


def track_event(payload: Payload) -> dict[str, Any]:
    event: dict[str, Any] = {
        "event": payload.event_name,
        "event_time": event_seconds(payload),
        "event_id": payload.event_id,  # TikTok's dedup key (48 h) with the Pixel's
        "user": user(payload),
    }
    page: dict[str, Any] = {}
    if payload.page_url:
        page["url"] = payload.page_url
    if payload.referrer:
        page["referrer"] = payload.referrer
    if page:
        event["page"] = page
    props = properties(payload)
    if props:
        event["properties"] = props
    return event


def build_request(
    *,
    url: str,
    access_token: str,
    event_source: str,
    event_source_id: str,
    test_event_code: str,
    events: Sequence[Forwarded],
) -> OutboundRequest:
    if not events:
        raise ValueError("a TikTok Events API request needs at least one event")
    body: dict[str, Any] = {
        "event_source": event_source,
        "event_source_id": event_source_id,
        "data": [track_event(event.payload) for event in events],
    }
    if test_event_code:
        body["test_event_code"] = test_event_code
    headers = {"content-type": "application/json", "access-token": access_token}
    return OutboundRequest(method="POST", url=url, headers=headers, body=_encoder.encode(body))
