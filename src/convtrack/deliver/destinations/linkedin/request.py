"""Events to a LinkedIn Conversions API BATCH_CREATE request, pure.

destinations.md §4: one element per event, ``conversionHappenedAt`` in epoch
milliseconds, ``amount`` a decimal string, ``eventId`` our event id (LinkedIn
keeps one copy per eventId, so a retried batch cannot double count).

``user.userInfo`` is never sent: LinkedIn wants plain first and last names
there ([S] Segment refuses a userInfo without both), and we only ever hold
names as hashes. A userInfo with only ``countryCode`` would fail the element.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import msgspec

from convtrack.deliver.base import Forwarded, OutboundRequest
from convtrack.deliver.destinations.linkedin.config import LinkedInConfig
from convtrack.deliver.payload import Payload

MAX_ELEMENTS = 5000  # [S] Salesforce: 5,000 events per batch
MAX_EVENT_ID_CHARS = 64  # [S] Salesforce: eventId is at most 64 characters
RULE_URN = "urn:lla:llaPartnerConversion:"
SHA256_EMAIL = "SHA256_EMAIL"
LI_FAT_ID = "LINKEDIN_FIRST_PARTY_ADS_TRACKING_UUID"

_encoder = msgspec.json.Encoder(order="deterministic")


def linkedin_event_id(event_id: str) -> str:
    """Our id, or its SHA-256 when it is longer than LinkedIn takes (stable across retries)."""
    if len(event_id) <= MAX_EVENT_ID_CHARS:
        return event_id
    return hashlib.sha256(event_id.encode()).hexdigest()


def user_ids(payload: Payload) -> list[dict[str, str]]:
    """The ids LinkedIn matches on: the hashed email (trim + lowercase, as Meta's) and li_fat_id.

    The email hash is the stored one; the click id is sent as given, never hashed.
    """
    ids = []
    email = payload.user.get("email")
    if email:
        ids.append({"idType": SHA256_EMAIL, "idValue": email})
    li_fat_id = payload.click_ids.get("li_fat_id")
    if li_fat_id:
        ids.append({"idType": LI_FAT_ID, "idValue": li_fat_id})
    return ids


def conversion_element(config: LinkedInConfig, payload: Payload) -> dict[str, Any]:
    rule = config.rule_for(payload.source_event_name or payload.event_name)
    element: dict[str, Any] = {
        "conversion": RULE_URN + rule,
        "conversionHappenedAt": payload.event_time_us // 1000,
        "eventId": linkedin_event_id(payload.event_id),
        "user": {"userIds": user_ids(payload)},
    }
    if payload.amount is not None and payload.currency:
        element["conversionValue"] = {"currencyCode": payload.currency, "amount": payload.amount}
    return element


def build_request(config: LinkedInConfig, events: Sequence[Forwarded]) -> OutboundRequest:
    if not events:
        raise ValueError("a LinkedIn batch needs at least one event")
    if len(events) > MAX_ELEMENTS:
        raise ValueError(f"a LinkedIn batch takes at most {MAX_ELEMENTS} events")
    body = _encoder.encode(
        {"elements": [conversion_element(config, event.payload) for event in events]}
    )
    headers = {
        "Authorization": f"Bearer {config.access_token}",
        "LinkedIn-Version": config.api_version,
        "X-Restli-Protocol-Version": "2.0.0",
        "X-RestLi-Method": "BATCH_CREATE",
        "Content-Type": "application/json",
    }
    return OutboundRequest(method="POST", url=config.url, headers=headers, body=body)
