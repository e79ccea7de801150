"""Events to a Google Ads request, pure: uploadClickConversions or Data Manager events:ingest.

Both carry our event id as the platform's dedup key (``orderId`` per
conversion action; ``transactionId``), so a batch sent again after a crash or
a lost answer is recorded once. Contact fields are already SHA-256 hex
(payload ``user``): the Google variants, phone in E.164 with its '+'.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import msgspec

from convtrack.deliver.base import Forwarded, OutboundRequest
from convtrack.deliver.destinations.google_ads.config import GoogleAdsConfig
from convtrack.deliver.payload import Payload

CLICK_ID_KINDS = ("gclid", "gbraid", "wbraid")  # the one sent is the first present
MAX_UPLOAD_IDENTIFIERS = 5  # uploadClickConversions: at most 5 userIdentifiers
MAX_CONVERSIONS = 2000  # both APIs: at most 2,000 conversions / events per request

_encoder = msgspec.json.Encoder(order="deterministic")


def click_id(payload: Payload) -> tuple[str, str] | None:
    """The one Google click id to send: gclid, else gbraid, else wbraid (never two)."""
    for kind in CLICK_ID_KINDS:
        value = payload.click_ids.get(kind)
        if value:
            return kind, value
    return None


def hashed_contacts(payload: Payload, email_key: str) -> list[tuple[str, str]]:
    """("email" | "phone", SHA-256 hex) pairs, only with ad_user_data consent."""
    if not payload.consent.ad_user_data:
        return []
    user = payload.user
    found = []
    if user.get(email_key):
        found.append(("email", user[email_key]))
    if user.get("phone_e164"):
        found.append(("phone", user["phone_e164"]))
    return found


def conversion_date_time(event_time_us: int) -> str:
    """Google Ads' "yyyy-mm-dd hh:mm:ss+00:00" (UTC; the offset is mandatory)."""
    moment = datetime.fromtimestamp(event_time_us // 1_000_000, tz=UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S+00:00")


def _money(payload: Payload) -> float | None:
    amount = payload.amount
    return float(Decimal(amount)) if amount is not None else None


def _consent(payload: Payload, granted: str, denied: str) -> dict[str, str]:
    consent = payload.consent
    return {
        "adUserData": granted if consent.ad_user_data else denied,
        "adPersonalization": granted if consent.ad_personalization else denied,
    }


def _headers(config: GoogleAdsConfig, *, with_google_ads_headers: bool) -> dict[str, str]:
    headers = {
        "authorization": f"Bearer {config.access_token}",
        "content-type": "application/json",
    }
    if with_google_ads_headers:
        if config.developer_token:  # ignored by Google since 2026-09-09, still accepted
            headers["developer-token"] = config.developer_token
        if config.login_customer_id:
            headers["login-customer-id"] = config.login_customer_id
    return headers


# -- uploadClickConversions (destinations.md 2a) ------------------------------------


def click_conversion(config: GoogleAdsConfig, payload: Payload) -> dict[str, Any]:
    action = config.action_for(payload.source_event_name or payload.event_name)
    row: dict[str, Any] = {
        "conversionAction": f"customers/{config.customer_id}/conversionActions/{action}",
        "conversionDateTime": conversion_date_time(payload.event_time_us),
        "orderId": payload.event_id,
        "consent": _consent(payload, "GRANTED", "DENIED"),
    }
    found = click_id(payload)
    if found is not None:
        row[found[0]] = found[1]
    else:  # enhanced conversions for leads: hashed identifiers instead of a click
        names = {"email": "hashedEmail", "phone": "hashedPhoneNumber"}
        contacts = hashed_contacts(payload, config.email_key)[:MAX_UPLOAD_IDENTIFIERS]
        if contacts:
            row["userIdentifiers"] = [
                {names[kind]: value, "userIdentifierSource": "FIRST_PARTY"}
                for kind, value in contacts
            ]
    value = _money(payload)
    if value is not None:
        row["conversionValue"] = value
        row["currencyCode"] = payload.currency
    return row


def build_click_upload(config: GoogleAdsConfig, events: Sequence[Forwarded]) -> OutboundRequest:
    _check_size(events)
    body = {
        "conversions": [click_conversion(config, event.payload) for event in events],
        "partialFailure": True,  # per-row errors; false is refused (PARTIAL_FAILURE_MODE_REQUIRED)
    }
    url = (
        f"{config.base_url}/{config.api_version}/customers/{config.customer_id}"
        ":uploadClickConversions"
    )
    return OutboundRequest(method="POST", url=url, body=_encoder.encode(body),
                           headers=_headers(config, with_google_ads_headers=True))  # fmt: skip


# -- Data Manager events:ingest (destinations.md 2b) --------------------------------


def ingest_event(config: GoogleAdsConfig, payload: Payload) -> dict[str, Any]:
    action = config.action_for(payload.source_event_name or payload.event_name)
    event: dict[str, Any] = {
        "destinationReferences": [action],
        "transactionId": payload.event_id,
        "eventTimestamp": payload.event_time,
        "eventSource": "WEB",
        "consent": _consent(payload, "CONSENT_GRANTED", "CONSENT_DENIED"),
    }
    found = click_id(payload)
    if found is not None:
        event["adIdentifiers"] = {found[0]: found[1]}
    # user_data.proto: UserIdentifier is a oneof email_address | phone_number | address.
    names = {"email": "emailAddress", "phone": "phoneNumber"}
    contacts = hashed_contacts(payload, config.email_key)
    if contacts:
        event["userData"] = {"userIdentifiers": [{names[kind]: value} for kind, value in contacts]}
    value = _money(payload)
    if value is not None:
        event["conversionValue"] = value
        event["currency"] = payload.currency
    return event


def _destination(config: GoogleAdsConfig, action: str) -> dict[str, Any]:
    destination: dict[str, Any] = {
        "reference": action,
        "operatingAccount": {"accountType": "GOOGLE_ADS", "accountId": config.customer_id},
        "productDestinationId": action,
    }
    if config.login_customer_id:
        destination["loginAccount"] = {
            "accountType": "GOOGLE_ADS",
            "accountId": config.login_customer_id,
        }
    return destination


def build_data_manager(config: GoogleAdsConfig, events: Sequence[Forwarded]) -> OutboundRequest:
    _check_size(events)
    rows = [ingest_event(config, event.payload) for event in events]
    actions = sorted({ref for row in rows for ref in row["destinationReferences"]})
    body: dict[str, Any] = {
        "destinations": [_destination(config, action) for action in actions],
        "events": rows,
    }
    if any("userData" in row for row in rows):
        body["encoding"] = "HEX"  # required whenever userData is sent
    url = f"{config.base_url}/{config.data_manager_version}/events:ingest"
    return OutboundRequest(method="POST", url=url, body=_encoder.encode(body),
                           headers=_headers(config, with_google_ads_headers=False))  # fmt: skip


def _check_size(events: Sequence[Forwarded]) -> None:
    if not 1 <= len(events) <= MAX_CONVERSIONS:
        raise ValueError(f"a Google Ads request takes 1 to {MAX_CONVERSIONS} events")
