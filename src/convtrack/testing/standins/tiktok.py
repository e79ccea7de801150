"""A stand-in for TikTok's Events API 2.0, checking destinations.md §5 and the §8 checklist.

TikTok answers HTTP 200 with a code envelope: ``{"code": 0, "message": "OK",
"request_id": …, "data": {}}`` when accepted, a non-zero code otherwise
(40104/40105 for a missing or wrong Access-Token, 40002 for invalid
parameters; the numbers are [UNCONFIRMED] in our reference). The
(event, event_id) table remembers events for 48 h; a repeat is accepted and
listed in ``repeats``, as TikTok drops it.
"""

from __future__ import annotations

import ipaddress
import json
import re
import threading
import time
from collections.abc import Callable
from typing import Any

from convtrack.testing.standins.base import Answer, Request, StandIn

EVENT_SOURCES = frozenset({"web", "app", "offline", "crm"})
HASHED_KEYS = ("email", "phone", "external_id")
MAX_EVENTS = 1000
DEDUP_SECS = 48 * 3600
_PATH = re.compile(r"^/open_api/(v\d+\.\d+)/event/track/$")
_HEX64 = re.compile(r"^[a-f0-9]{64}$")
_CURRENCY = re.compile(r"^[A-Z]{3}$")


def envelope(code: int, message: str) -> bytes:
    """TikTok's answer envelope."""
    return json.dumps(
        {"code": code, "message": message, "request_id": "2026112800000000StandIn", "data": {}}
    ).encode()


class Refused(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def _invalid(message: str) -> Refused:
    return Refused(40002, message)


class TikTokStandIn(StandIn):
    """``window_days``: refuse older events (TikTok's window is [UNCONFIRMED]: off by
    default). ``now``: the platform's clock in epoch seconds."""

    def __init__(
        self,
        *,
        event_source_id: str,
        access_token: str,
        now: Callable[[], float] = time.time,
        window_days: int | None = None,
    ) -> None:
        super().__init__()
        self.busy = 0  # requests being served
        self.event_source_id = event_source_id
        self.access_token = access_token
        self.now = now
        self.window_days = window_days
        self.bodies: list[dict[str, Any]] = []  # accepted request bodies
        self.events: list[dict[str, Any]] = []  # accepted events, as received
        self.dedup: dict[tuple[str, str], float] = {}
        self.repeats: list[str] = []
        self.refusals: list[str] = []  # the message of each refused request

    def serve(self, request: Request) -> Answer | None:
        with self.lock:
            self.busy += 1
        try:
            return super().serve(request)
        finally:
            with self.lock:
                self.busy -= 1

    def wait_idle(self, deadline_secs: float = 10.0) -> None:
        """Wait until no request is being served (a slow one outlives its client)."""
        deadline = time.monotonic() + deadline_secs
        while self.busy:
            assert time.monotonic() < deadline, "the stand-in is still serving"
            threading.Event().wait(0.01)

    def check(self, request: Request) -> Answer:
        if request.method != "POST" or not _PATH.fullmatch(request.path):
            return Answer(404, {"content-type": "text/plain"}, b"404 page not found")
        try:
            body = self._read(request)
            for index, event in enumerate(body["data"]):
                self._check_event(index, event)
        except Refused as refused:
            self.refusals.append(refused.args[0])
            return Answer(200, {"content-type": "application/json"},
                          envelope(refused.code, refused.args[0]))  # fmt: skip
        now = self.now()
        self.bodies.append(body)
        for event in body["data"]:
            self._remember(event, now)
        return Answer(200, {"content-type": "application/json"}, envelope(0, "OK"))

    def _read(self, request: Request) -> dict[str, Any]:
        token = request.headers.get("access-token")
        if not token:
            raise Refused(40104, "Access token is empty.")
        if token != self.access_token:
            raise Refused(40105, "Access token is incorrect or has been revoked.")
        try:
            body = json.loads(request.body)
        except ValueError as exc:
            raise _invalid(f"the body is not JSON: {exc}") from exc
        if not isinstance(body, dict):
            raise _invalid("the body must be an object")
        if body.get("event_source") not in EVENT_SOURCES:
            raise _invalid("event_source must be one of web, app, offline, crm")
        if body.get("event_source_id") != self.event_source_id:
            raise _invalid("event_source_id is missing or unknown")
        data = body.get("data")
        if not isinstance(data, list) or not 1 <= len(data) <= MAX_EVENTS:
            raise _invalid(f"data must hold 1 to {MAX_EVENTS} events")
        return body

    def _check_event(self, i: int, event: Any) -> None:
        if not isinstance(event, dict):
            raise _invalid(f"data[{i}] must be an object")
        name = event.get("event")
        if not isinstance(name, str) or not name:
            raise _invalid(f"data[{i}].event is required")
        event_time = event.get("event_time")
        if isinstance(event_time, bool) or not isinstance(event_time, int):
            raise _invalid(f"data[{i}].event_time must be an integer")
        if event_time >= 10**10:
            raise _invalid(f"data[{i}].event_time must be Unix seconds, not milliseconds")
        if self.window_days is not None and event_time < self.now() - self.window_days * 86_400:
            raise _invalid(f"data[{i}].event_time is too far in the past")
        if "event_id" in event and not isinstance(event["event_id"], str):
            raise _invalid(f"data[{i}].event_id must be a string")
        self._check_user(i, event.get("user", {}))
        page = event.get("page", {})
        if not isinstance(page, dict) or not all(isinstance(v, str) for v in page.values()):
            raise _invalid(f"data[{i}].page must be an object of strings")
        properties = event.get("properties", {})
        if not isinstance(properties, dict):
            raise _invalid(f"data[{i}].properties must be an object")
        value = properties.get("value")
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise _invalid(f"data[{i}].properties.value must be a number")
        currency = properties.get("currency")
        if value is not None and not (isinstance(currency, str) and _CURRENCY.match(currency)):
            raise _invalid(f"data[{i}].properties.currency must be ISO 4217 with a value")

    @staticmethod
    def _check_user(i: int, user: Any) -> None:
        if not isinstance(user, dict):
            raise _invalid(f"data[{i}].user must be an object")
        for key in HASHED_KEYS:
            if key not in user:
                continue
            values = user[key] if isinstance(user[key], list) else [user[key]]
            if not values or not all(isinstance(v, str) and _HEX64.match(v) for v in values):
                raise _invalid(f"data[{i}].user.{key} must be SHA-256 lowercase hex")
        if "ip" in user:
            try:
                ipaddress.ip_address(user["ip"])
            except ValueError as exc:
                raise _invalid(f"data[{i}].user.ip is not an IP address") from exc
        for key in ("ttclid", "ttp", "user_agent"):
            value = user.get(key)
            if value is not None and (not isinstance(value, str) or _HEX64.match(value)):
                raise _invalid(f"data[{i}].user.{key} must be sent as it is, unhashed")

    def _remember(self, event: dict[str, Any], now: float) -> None:
        self.events.append(event)
        event_id = event.get("event_id")
        if not isinstance(event_id, str):
            return
        self.accepted.append(event_id)
        key = (event["event"], event_id)
        seen = self.dedup.get(key)
        if seen is not None and now - seen < DEDUP_SECS:
            self.repeats.append(event_id)
        else:
            self.dedup[key] = now
