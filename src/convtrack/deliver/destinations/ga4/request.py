"""Events to a GA4 Measurement Protocol request, pure (destinations.md section 3).

A request body names ONE client (``client_id`` on web streams,
``app_instance_id`` on app streams), so events of different users can never
share a request. The destination therefore sends one event per request
(``max_batch_events = 1``); ``build`` refuses a batch whose events belong to
different clients rather than attribute them to the wrong one.

The client id is the gtag one when the event carries it
(``properties.ga_client_id`` or ``properties.client_id``); otherwise a stable
pseudo id derived from the event's source and user id (or session id), so
all of one user's server events land on one GA4 client.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

import msgspec

from convtrack.deliver.base import Forwarded, OutboundRequest
from convtrack.deliver.destinations.ga4.config import Ga4Config
from convtrack.deliver.payload import Payload

MAX_EVENTS = 25  # per request
MAX_BODY_BYTES = 130_000  # a body must be smaller than 130 kB
MAX_NAME_CHARS = 40
MAX_VALUE_CHARS = 100  # parameter values
MAX_USER_ID_CHARS = 256
COLLECT_PATH = "/mp/collect"
DEBUG_PATH = "/debug/mp/collect"

# Event names GA4 reserves (support.google.com/analytics/answer/13316687) and,
# for web streams, page_view; plus the reserved prefixes.
RESERVED_EVENT_NAMES = frozenset({
    "ad_activeview", "ad_click", "ad_exposure", "ad_impression", "ad_query", "ad_reward",
    "adunit_exposure", "app_background", "app_clear_data", "app_exception", "app_remove",
    "app_store_refund", "app_store_subscription_cancel", "app_store_subscription_convert",
    "app_store_subscription_renew", "app_update", "app_upgrade", "dynamic_link_app_open",
    "dynamic_link_app_update", "dynamic_link_first_open", "error", "firebase_campaign",
    "firebase_in_app_message_action", "firebase_in_app_message_dismiss",
    "firebase_in_app_message_impression", "first_open", "first_visit", "in_app_purchase",
    "notification_dismiss", "notification_foreground", "notification_open",
    "notification_receive", "os_update", "page_view", "session_start",
    "session_start_with_rollout", "user_engagement",
})  # fmt: skip
RESERVED_NAME_PREFIXES = ("_", "ad_", "firebase_", "ga_", "google_", "gtag.")
NAME_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,39}$")
_NOT_NAME_CHARS = re.compile(r"[^A-Za-z0-9_]")
_LEADING_NON_LETTERS = re.compile(r"^[^A-Za-z]+")

_encoder = msgspec.json.Encoder(order="deterministic")


def event_name(payload: Payload) -> str:
    """The destination's name for the event (after ``event_map``) under GA4's rules:
    letters, digits and '_', starting with a letter, at most 40 characters."""
    name = _NOT_NAME_CHARS.sub("_", payload.event_name.strip())
    return _LEADING_NON_LETTERS.sub("", name)[:MAX_NAME_CHARS]


def is_reserved(name: str) -> bool:
    lowered = name.lower()
    return lowered in RESERVED_EVENT_NAMES or lowered.startswith(RESERVED_NAME_PREFIXES)


def client_id(payload: Payload) -> str:
    """The gtag client id when the event carries one, else a stable pseudo id."""
    for key in ("ga_client_id", "client_id"):
        given = payload.properties.get(key)
        if isinstance(given, str) and 0 < len(given.strip()) <= MAX_VALUE_CHARS:
            return given.strip()
    who = payload.user_id or payload.session_id or payload.event_id
    digest = hashlib.sha256(f"convtrack:{payload.source}:{who}".encode()).hexdigest()
    # Shaped like gtag's "<random>.<seconds>" so GA4 tools treat it as a client id.
    return f"{int(digest[:8], 16)}.{int(digest[8:16], 16)}"


def app_instance_id(payload: Payload) -> str | None:
    for key in ("app_instance_id", "firebase_app_instance_id"):
        given = payload.properties.get(key)
        if isinstance(given, str) and given.strip():
            return given.strip()
    return None


def event_params(config: Ga4Config, payload: Payload) -> dict[str, Any]:
    params: dict[str, Any] = {"engagement_time_msec": config.engagement_time_msec}
    if payload.amount is not None:
        params["value"] = float(Decimal(payload.amount))
        params["currency"] = payload.currency
    if len(payload.event_id) <= MAX_VALUE_CHARS:
        params["transaction_id"] = payload.event_id
    session = payload.session_id
    if session is not None and 0 < len(session) <= MAX_VALUE_CHARS:
        params["session_id"] = session
    return params


def _identity(config: Ga4Config, payload: Payload) -> dict[str, Any]:
    identity: dict[str, Any] = {}
    if config.app_stream:
        identity["app_instance_id"] = app_instance_id(payload)
    else:
        identity["client_id"] = client_id(payload)
    user_id = payload.user_id
    if user_id is not None and 0 < len(user_id) <= MAX_USER_ID_CHARS:
        identity["user_id"] = user_id
    return identity


def _consent(payload: Payload) -> dict[str, str]:
    consent = payload.consent
    return {
        "ad_user_data": "GRANTED" if consent.ad_user_data else "DENIED",
        "ad_personalization": "GRANTED" if consent.ad_personalization else "DENIED",
    }


def collect_url(config: Ga4Config, path: str = COLLECT_PATH) -> str:
    stream = (
        {"firebase_app_id": config.firebase_app_id}
        if config.app_stream
        else {"measurement_id": config.measurement_id}
    )
    return f"{config.base_url}{path}?{urlencode({**stream, 'api_secret': config.api_secret})}"


def build_request(config: Ga4Config, events: Sequence[Forwarded]) -> OutboundRequest:
    if not 1 <= len(events) <= MAX_EVENTS:
        raise ValueError(f"a GA4 request takes 1 to {MAX_EVENTS} events")
    first = events[0].payload
    identity = _identity(config, first)
    if any(_identity(config, event.payload) != identity for event in events[1:]):
        raise ValueError("a GA4 request is for one client: these events belong to several")
    body: dict[str, Any] = {
        **identity,
        "timestamp_micros": first.event_time_us,
        "consent": _consent(first),
        "events": [],
    }
    for event in events:
        item: dict[str, Any] = {"name": event_name(event.payload),
                                "params": event_params(config, event.payload)}  # fmt: skip
        if len(events) > 1:  # each event keeps its own time
            item["timestamp_micros"] = event.payload.event_time_us
        body["events"].append(item)
    encoded = _encoder.encode(body)
    if len(encoded) >= MAX_BODY_BYTES:
        raise ValueError(f"a GA4 body must be smaller than {MAX_BODY_BYTES} bytes")
    return OutboundRequest(method="POST", url=collect_url(config), body=encoded,
                           headers={"content-type": "application/json"})  # fmt: skip


def debug_request(config: Ga4Config, request: OutboundRequest) -> OutboundRequest:
    """The same request to the validation endpoint (which records nothing), asking for
    GA4's strict checks (``validation_behavior: ENFORCE_RECOMMENDATIONS``)."""
    url = request.url.replace(config.base_url + COLLECT_PATH, config.base_url + DEBUG_PATH, 1)
    body = msgspec.json.decode(request.body)
    body["validation_behavior"] = "ENFORCE_RECOMMENDATIONS"
    return OutboundRequest(method=request.method, url=url, headers=request.headers,
                           body=_encoder.encode(body))  # fmt: skip
