"""A stand-in for the GA4 Measurement Protocol (destinations.md section 3 and the section 8
checklist).

``/mp/collect`` answers 204 to everything, as GA4 does, malformed or not. It
records what a real property would keep: the events of a request that passes
validation and names its stream and ``api_secret`` go to ``accepted`` (their
``transaction_id``) and ``events``; the others land in ``invalid`` with the
validation messages GA4's debug endpoint would have given. GA4 does not
deduplicate: an event sent twice is in ``accepted`` twice, so tests can prove
exactly-once delivery.

``/debug/mp/collect`` answers 200 with ``{"validationMessages": [...]}``:
at most 25 events, event and parameter names ``^[A-Za-z][A-Za-z0-9_]{0,39}$``
and not reserved, at most 25 parameters, values at most 100 characters, a
``client_id`` (web) or ``app_instance_id`` (app), ``timestamp_micros`` in
microseconds, and a body smaller than 130 kB. It records nothing.
"""

from __future__ import annotations

import json
import re
import threading
from typing import Any

from convtrack.testing.standins.base import Answer, Request, StandIn

STALL_SECS = 60.0

MAX_EVENTS = 25
MAX_PARAMS = 25
MAX_VALUE_CHARS = 100
MAX_BODY_BYTES = 130_000
NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,39}$")
# support.google.com/analytics/answer/13316687, plus page_view on web streams.
RESERVED_EVENTS = frozenset({
    "ad_activeview", "ad_click", "ad_exposure", "ad_impression", "ad_query", "ad_reward",
    "adunit_exposure", "app_background", "app_clear_data", "app_exception", "app_remove",
    "app_store_refund", "app_store_subscription_cancel", "app_store_subscription_convert",
    "app_store_subscription_renew", "app_update", "app_upgrade", "dynamic_link_app_open",
    "dynamic_link_app_update", "dynamic_link_first_open", "error", "firebase_campaign",
    "first_open", "first_visit", "in_app_purchase", "notification_dismiss",
    "notification_foreground", "notification_open", "notification_receive", "os_update",
    "page_view", "session_start", "session_start_with_rollout", "user_engagement",
})  # fmt: skip
RESERVED_PREFIXES = ("_", "firebase_", "ga_", "google_", "gtag.")
RESERVED_PARAMS = frozenset({"gclid", "dclid"})
# Microseconds since the epoch have 16 digits until 2286; milliseconds have 13.
MIN_MICROS = 10**15


def message(field: str, code: str, description: str) -> dict[str, str]:
    return {"fieldPath": field, "validationCode": code, "description": description}


def validate(body: bytes, app_stream: bool) -> list[dict[str, str]]:
    """GA4's validation messages for one request body (empty: valid)."""
    if len(body) >= MAX_BODY_BYTES:
        return [message("", "VALUE_OUT_OF_BOUNDS", "The body must be smaller than 130 kB.")]
    try:
        data = json.loads(body)
    except ValueError:
        return [message("", "VALUE_INVALID", "Unable to parse the body as JSON.")]
    if not isinstance(data, dict):
        return [message("", "VALUE_INVALID", "The body must be a JSON object.")]
    found: list[dict[str, str]] = []
    who = "app_instance_id" if app_stream else "client_id"
    if not isinstance(data.get(who), str) or not data[who]:
        found.append(message(who, "VALUE_REQUIRED", f"{who} is required."))
    user_id = data.get("user_id")
    if user_id is not None and (not isinstance(user_id, str) or len(user_id) > 256):
        found.append(message("user_id", "VALUE_INVALID", "user_id is at most 256 characters."))
    micros = data.get("timestamp_micros")
    if micros is not None and (not isinstance(micros, int) or micros < MIN_MICROS):
        found.append(message("timestamp_micros", "VALUE_INVALID",
                             "timestamp_micros must be microseconds since the epoch."))  # fmt: skip
    events = data.get("events")
    if not isinstance(events, list) or not events:
        return [*found, message("events", "VALUE_REQUIRED", "events is required.")]
    if len(events) > MAX_EVENTS:
        found.append(message("events", "EXCEEDED_MAX_ENTITIES", "At most 25 events."))
    for index, event in enumerate(events):
        found.extend(_event_messages(f"events[{index}]", event))
    return found


def _event_messages(path: str, event: Any) -> list[dict[str, str]]:
    if not isinstance(event, dict):
        return [message(path, "VALUE_INVALID", "An event is an object.")]
    found = []
    name = event.get("name")
    if not isinstance(name, str) or not NAME.match(name):
        found.append(message(f"{path}.name", "NAME_INVALID", f"Event name {name!r} is invalid."))
    elif name.lower() in RESERVED_EVENTS or name.lower().startswith((*RESERVED_PREFIXES, "ad_")):
        found.append(message(f"{path}.name", "NAME_RESERVED", f"Event name {name} is reserved."))
    params = event.get("params", {})
    if not isinstance(params, dict):
        return [*found, message(f"{path}.params", "VALUE_INVALID", "params is an object.")]
    if len(params) > MAX_PARAMS:
        found.append(message(f"{path}.params", "EXCEEDED_MAX_ENTITIES", "At most 25 params."))
    for key, value in params.items():
        where = f"{path}.params.{key}"
        if not NAME.match(key):
            found.append(message(where, "NAME_INVALID", f"Param name {key!r} is invalid."))
        elif key.startswith(RESERVED_PREFIXES) or key in RESERVED_PARAMS:
            found.append(message(where, "NAME_RESERVED", f"Param name {key} is reserved."))
        if isinstance(value, str) and len(value) > MAX_VALUE_CHARS:
            found.append(message(where, "VALUE_OUT_OF_BOUNDS", "Values are at most 100 chars."))
    if "value" in params and not isinstance(params["value"], (int, float)):
        found.append(message(f"{path}.params.value", "VALUE_INVALID", "value is a number."))
    if "value" in params and "currency" not in params:
        found.append(message(f"{path}.params.currency", "VALUE_REQUIRED",
                             "currency is required with value."))  # fmt: skip
    return found


class Ga4StandIn(StandIn):
    def __init__(self, api_secret: str = "s3cr3t") -> None:
        self.api_secret = api_secret
        self.events: list[dict[str, Any]] = []  # every recorded event, with its request's ids
        self.invalid: list[tuple[bytes, list[dict[str, str]]]] = []
        self.debug_requests = 0
        # The next request is recorded, then its answer waits (until close): a crash of
        # the sender after the platform took the events, before it heard back.
        self.stall_next = False
        self._release = threading.Event()
        super().__init__()

    def check(self, request: Request) -> Answer:
        app_stream = "firebase_app_id" in request.query
        if request.path == "/debug/mp/collect":
            self.debug_requests += 1
            messages = validate(request.body, app_stream)
            return Answer(200, {"content-type": "application/json"},
                          json.dumps({"validationMessages": messages}).encode())  # fmt: skip
        if request.path != "/mp/collect":
            return Answer(404, {}, b"")
        messages = validate(request.body, app_stream)
        stream = request.query.get("firebase_app_id") or request.query.get("measurement_id")
        if not stream or request.query.get("api_secret") != self.api_secret:
            messages.append(message("", "VALUE_INVALID", "unknown stream or api_secret"))
        if messages:
            self.invalid.append((request.body, messages))
            return Answer(204)
        data = json.loads(request.body)
        for event in data["events"]:
            recorded = {**event, "client_id": data.get("client_id"),
                        "app_instance_id": data.get("app_instance_id"),
                        "user_id": data.get("user_id"),
                        "timestamp_micros": event.get("timestamp_micros",
                                                      data.get("timestamp_micros")),
                        "consent": data.get("consent")}  # fmt: skip
            self.events.append(recorded)
            self.accepted.append(str(event.get("params", {}).get("transaction_id")))
        return Answer(204)

    def serve(self, request: Request) -> Answer | None:
        answer = super().serve(request)
        with self.lock:
            stall, self.stall_next = self.stall_next, False
        if stall:
            self._release.wait(STALL_SECS)
        return answer

    def close(self) -> None:
        self._release.set()
        super().close()
