"""The canonical payload every destination reads, built once per event and destination.

``Payload`` below; every field always present (``None`` when unknown). As JSON
(webhooks, dead letters, in-flight markers) it has these names, in this order::

    event_id            our event id (the platforms' dedup key)
    event_name          the destination's name for it (after ``event_map``)
    source_event_name   the name the event arrived with
    event_time          RFC 3339 UTC with milliseconds
    event_time_us       epoch microseconds
    received_at_us      epoch microseconds
    value               minor units (int) or None
    currency            ISO 4217 or None
    amount              value in major units as an exact decimal string ("49.99") or None
    campaign_id, campaign_source, campaign_medium, device_type, country_code
    user_id, session_id, source
    page_url, referrer  from context
    client_ip           user.client_ip, else context.ip
    user_agent          user.user_agent, else context.user_agent
    properties          as sent
    user                the stored user object: SHA-256 hex of email, email_google,
                        email_google_sdk, phone (digits, no '+'), phone_e164 (with '+'), first_name,
                        first_name_plain, last_name, last_name_plain, city, state,
                        zip, external_id; plain country, fbc, fbp
    click_ids           the event's own click ids, else its attributed touch's
    consent             ad_user_data, ad_personalization, analytics: booleans, the
                        setting ``consent.default_granted`` filling what is absent

Raw contact values never reach this payload: they were hashed on arrival.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec

from convtrack.model.currency import major_amount
from convtrack.model.event import text
from convtrack.model.processed import ProcessedEvent

_USER_PLAIN_MOVED = ("client_ip", "user_agent")


class Consent(msgspec.Struct, frozen=True):
    """The event's consent, every flag resolved (``consent.default_granted`` fills
    what the event did not say)."""

    ad_user_data: bool
    ad_personalization: bool
    analytics: bool


class Payload(msgspec.Struct, frozen=True, kw_only=True):
    """The canonical payload (the module docstring has each field's meaning).

    Stored (``encode_payload``), its JSON has the names and order of the dict it
    replaced, whose rows ``decode_payload`` still reads; webhooks sort its fields
    as they sorted the dict's keys.
    """

    event_id: str
    event_name: str
    source_event_name: str
    event_time: str
    event_time_us: int
    received_at_us: int
    value: int | None
    currency: str | None
    amount: str | None
    campaign_id: str
    campaign_source: str | None
    campaign_medium: str | None
    device_type: str
    country_code: str
    user_id: str | None
    session_id: str | None
    source: str
    page_url: str | None
    referrer: str | None
    client_ip: str | None
    user_agent: str | None
    properties: dict[str, Any]
    user: dict[str, str]
    click_ids: dict[str, str]
    consent: Consent


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Payload)


def encode_payload(payload: Payload) -> str:
    """The payload as JSON text, as dead letters and in-flight markers store it."""
    return _encoder.encode(payload).decode()


def decode_payload(stored: str | bytes) -> Payload:
    """A stored payload, written by ``encode_payload`` or by the ``json.dumps`` of the
    dict it replaced (same field names)."""
    return _decoder.decode(stored)


def rfc3339_ms(us: int) -> str:
    moment = datetime.fromtimestamp(us / 1e6, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def resolved_consent(given: dict[str, bool], default_granted: bool) -> Consent:
    def flag(key: str) -> bool:
        return bool(given.get(key, default_granted))

    return Consent(flag("ad_user_data"), flag("ad_personalization"), flag("analytics"))


def forward_payload(
    processed: ProcessedEvent,
    *,
    event_map: dict[str, str] | None = None,
    default_granted: bool = True,
) -> Payload:
    event = processed.event
    context = event.context
    user = event.user
    name = event.event_name
    amount = None
    if event.value is not None and event.currency is not None:
        amount = major_amount(event.value, event.currency)
    click_ids = event.click_ids or processed.touch_click_ids
    return Payload(
        event_id=event.event_id,
        event_name=(event_map or {}).get(name, name),
        source_event_name=name,
        event_time=rfc3339_ms(event.event_time_us),
        event_time_us=event.event_time_us,
        received_at_us=event.received_at_us,
        value=event.value,
        currency=event.currency,
        amount=amount,
        campaign_id=processed.campaign_id,
        campaign_source=processed.campaign_source,
        campaign_medium=processed.campaign_medium,
        device_type=processed.device_type,
        country_code=processed.country_code,
        user_id=event.user_id,
        session_id=event.session_id,
        source=event.source,
        page_url=text(context.get("page_url")),
        referrer=text(context.get("referrer")),
        client_ip=user.get("client_ip") or text(context.get("ip")),
        user_agent=user.get("user_agent") or text(context.get("user_agent")),
        properties=event.properties,
        user={k: v for k, v in user.items() if k not in _USER_PLAIN_MOVED},
        click_ids=dict(click_ids),
        consent=resolved_consent(event.consent, default_granted),
    )
