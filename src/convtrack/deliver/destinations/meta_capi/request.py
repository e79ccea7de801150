"""Events to a Conversions API request, pure (destinations.md §1 and §7).

Contact fields arrive already hashed (``payload.user``); this module only
picks Meta's variants: phone as digits without '+', names with punctuation
dropped, the country hashed from its lower-case ISO code. IP, user agent,
``fbc`` and ``fbp`` are sent as they are, never hashed.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from typing import Any

import msgspec

from convtrack.deliver.base import Forwarded, OutboundRequest
from convtrack.deliver.fields import event_seconds, identifier, ip_address, number, purchase_fields
from convtrack.deliver.payload import Payload

_encoder = msgspec.json.Encoder(order="deterministic")
_HEX64 = re.compile(r"^[a-fA-F0-9]{64}$")
_NOT_LETTERS = re.compile(r"[^a-z]")
# fb.{subdomain index}.{creation time in ms}.{value}: Meta refuses the whole
# request for a malformed one, so one that does not fit is left out.
_COOKIE = re.compile(r"^fb\.\d\.\d{13}\..+")
# user_data keys taken as they are from the payload's hashed user fields.
_HASHED_AS_IS = (("fn", "first_name"), ("ln", "last_name"), ("ct", "city"),
                 ("st", "state"), ("zp", "zip"), ("external_id", "external_id"))  # fmt: skip


def hashed_country(country: str) -> str | None:
    """SHA-256 of the lower-case ISO 3166-1 alpha-2 code (a hash given by the sender
    passes); anything else (a country's name) is left out rather than hashed wrong."""
    if _HEX64.fullmatch(country):
        return country.lower()
    code = _NOT_LETTERS.sub("", country.strip().lower())
    return hashlib.sha256(code.encode()).hexdigest() if len(code) == 2 else None


def click_cookie(payload: Payload, name: str) -> str | None:
    """``fbc`` or ``fbp`` from the user object, else the click ids, when well formed."""
    for source in (payload.user, payload.click_ids):
        value = source.get(name)
        if value is not None and _COOKIE.match(value):
            return value
    return None


def fbc(payload: Payload) -> str | None:
    """The ``_fbc`` value, else one built from the fbclid as Meta describes:
    ``fb.1.<ms when the fbclid was seen>.<fbclid>`` (the event's time: stable across retries)."""
    given = click_cookie(payload, "fbc")
    if given:
        return given
    fbclid = payload.click_ids.get("fbclid")
    if fbclid:
        return f"fb.1.{payload.event_time_us // 1000}.{fbclid}"
    return None


def user_data(payload: Payload) -> dict[str, Any]:
    user = payload.user
    data: dict[str, Any] = {}
    if user.get("email"):
        data["em"] = [user["email"]]
    if user.get("phone"):  # the digits-only variant
        data["ph"] = [user["phone"]]
    for key, field in _HASHED_AS_IS:
        if user.get(field):
            data[key] = user[field]
    if user.get("country"):
        country = hashed_country(user["country"])
        if country:
            data["country"] = country
    client_ip = ip_address(payload.client_ip)
    if client_ip:
        data["client_ip_address"] = client_ip
    if payload.user_agent:
        data["client_user_agent"] = payload.user_agent
    click = fbc(payload)
    if click:
        data["fbc"] = click
    browser = click_cookie(payload, "fbp")
    if browser:
        data["fbp"] = browser
    return data


def contents(properties: dict[str, Any]) -> list[dict[str, Any]]:
    """``properties.contents`` items as Meta's ``{id, quantity, item_price}``
    (``content_id`` and ``price`` are read too, as TikTok-style senders write them)."""
    items = properties.get("contents")
    if not isinstance(items, list):
        return []
    out: list[dict[str, Any]] = []
    for item in items:
        if not isinstance(item, dict):
            continue
        item_id = identifier(item.get("id", item.get("content_id")))
        if item_id is None:
            continue
        entry: dict[str, Any] = {"id": item_id}
        quantity = number(item.get("quantity"))
        if quantity is not None:
            entry["quantity"] = quantity
        price = number(item.get("item_price", item.get("price")))
        if price is not None:
            entry["item_price"] = price
        out.append(entry)
    return out


def custom_data(payload: Payload) -> dict[str, Any]:
    data = purchase_fields(payload)
    items = contents(payload.properties)
    if items:
        data["contents"] = items
    return data


def server_event(payload: Payload, action_source: str) -> dict[str, Any]:
    event: dict[str, Any] = {
        "event_name": payload.event_name,
        "event_time": event_seconds(payload),
        "event_id": payload.event_id,  # Meta's dedup key (48 h) with the Pixel's eventID
        "action_source": action_source,
        "user_data": user_data(payload),
    }
    if payload.page_url:
        event["event_source_url"] = payload.page_url
    if payload.referrer:
        event["referrer_url"] = payload.referrer
    custom = custom_data(payload)
    if custom:
        event["custom_data"] = custom
    if not payload.consent.ad_personalization:
        event["opt_out"] = True  # Meta: use for attribution only, not ads optimisation
    return event


def build_request(
    *,
    url: str,
    access_token: str,
    action_source: str,
    test_event_code: str,
    events: Sequence[Forwarded],
) -> OutboundRequest:
    if not events:
        raise ValueError("a Conversions API request needs at least one event")
    body: dict[str, Any] = {
        "data": [server_event(event.payload, action_source) for event in events],
        "access_token": access_token,
    }
    if test_event_code:
        body["test_event_code"] = test_event_code
    headers = {"content-type": "application/json"}
    return OutboundRequest(method="POST", url=url, headers=headers, body=_encoder.encode(body))
