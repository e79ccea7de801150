"""A stand-in for Meta's Conversions API, checking destinations.md §1 and the §8 checklist.

Every problem refuses the whole request (HTTP 400 with the Graph error
envelope, code 100), as Meta does. An accepted request answers
``{"events_received": n, "messages": [], "fbtrace_id": …}``. The
(pixel_id, event_name, event_id) table remembers events for 48 h; a repeat is
accepted and listed in ``repeats``, as Meta drops it.
"""

from __future__ import annotations

import ipaddress
import json
import re
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

from convtrack.testing.standins.base import Answer, Request, StandIn

ACTION_SOURCES = frozenset({"website", "app", "email", "phone_call", "chat", "physical_store",
                            "system_generated", "business_messaging", "other"})  # fmt: skip
HASHED_KEYS = ("em", "ph", "fn", "ln", "ct", "st", "zp", "country", "db", "ge")
MAX_EVENTS = 1000
WINDOW_SECS = 7 * 86_400
DEDUP_SECS = 48 * 3600
_PATH = re.compile(r"^/(v\d+\.\d+)/(\d+)/events$")
_HEX64 = re.compile(r"^[a-f0-9]{64}$")
_COOKIE = re.compile(r"^fb\.\d\.\d{13}\..+")
_CURRENCY = re.compile(r"^[A-Z]{3}$")


def graph_error(
    message: str,
    code: int,
    *,
    subcode: int | None = None,
    kind: str = "OAuthException",
    user_msg: str | None = None,
    is_transient: bool | None = None,
) -> bytes:
    """A Graph API error envelope, as Meta sends it."""
    error: dict[str, Any] = {"message": message, "type": kind, "code": code,
                             "fbtrace_id": "AbCdEfStandIn"}  # fmt: skip
    if subcode is not None:
        error["error_subcode"] = subcode
    if user_msg is not None:
        error["error_user_title"] = "Invalid event"
        error["error_user_msg"] = user_msg
    if is_transient is not None:
        error["is_transient"] = is_transient
    return json.dumps({"error": error}).encode()


class Refused(Exception):
    def __init__(self, answer: Answer) -> None:
        super().__init__(answer.body.decode())
        self.answer = answer


def _invalid(user_msg: str, subcode: int = 2804019) -> Refused:
    body = graph_error("Invalid parameter", 100, subcode=subcode, user_msg=user_msg)
    return Refused(Answer(400, {"content-type": "application/json"}, body))


class MetaStandIn(StandIn):
    """``now``: the platform's clock in epoch seconds (tests pass their manual clock)."""

    def __init__(
        self, *, pixel_id: str, access_token: str, now: Callable[[], float] = time.time
    ) -> None:
        super().__init__()
        self.busy = 0  # requests being served
        self.pixel_id = pixel_id
        self.access_token = access_token
        self.now = now
        self.events: list[dict[str, Any]] = []  # accepted server events, as received
        self.dedup: dict[tuple[str, str, str], float] = {}
        self.repeats: list[str] = []
        self.refusals: list[str] = []  # the answer of each refused request
        self.test_event_codes: list[str | None] = []  # per readable request

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
        try:
            data = self._read(request)
            for index, event in enumerate(data):
                self._check_event(index, event)
        except Refused as refused:
            self.refusals.append(refused.args[0])
            return refused.answer
        now = self.now()
        for event in data:
            self._remember(event, now)
        answer = {"events_received": len(data), "messages": [], "fbtrace_id": "AbCdEfStandIn"}
        return Answer(200, {"content-type": "application/json"}, json.dumps(answer).encode())

    # -- the request ------------------------------------------------------------

    def _read(self, request: Request) -> list[Any]:
        matched = _PATH.fullmatch(request.path)
        if request.method != "POST" or not matched:
            refusal = graph_error("Unknown path components", 2500)
            raise Refused(Answer(400, {"content-type": "application/json"}, refusal))
        body = self._body(request)
        token = request.query.get("access_token") or body.get("access_token")
        if not token:
            message = "An access token is required to request this resource."
            raise Refused(Answer(400, {}, graph_error(message, 104)))
        if token != self.access_token:
            message = "Invalid OAuth access token - Cannot parse access token"
            raise Refused(Answer(401, {}, graph_error(message, 190)))
        if matched.group(2) != self.pixel_id:
            raise _invalid(f"pixel {matched.group(2)} does not exist", subcode=33)
        data = body.get("data")
        if isinstance(data, str):  # the form-encoded flavour: a JSON array string
            data = json.loads(data)
        if not isinstance(data, list) or not 1 <= len(data) <= MAX_EVENTS:
            raise _invalid(f"data must hold 1 to {MAX_EVENTS} events")
        self.test_event_codes.append(body.get("test_event_code"))
        return data

    @staticmethod
    def _body(request: Request) -> dict[str, Any]:
        content_type = request.headers.get("content-type", "")
        try:
            if content_type.startswith("application/json"):
                body = json.loads(request.body)
            else:
                body = {k: v[-1] for k, v in parse_qs(request.body.decode()).items()}
        except (ValueError, UnicodeDecodeError) as exc:
            raise _invalid(f"the body is not readable: {exc}") from exc
        if not isinstance(body, dict):
            raise _invalid("the body must be an object")
        return body

    def _check_event(self, i: int, event: Any) -> None:
        if not isinstance(event, dict):
            raise _invalid(f"data[{i}] must be an object")
        name = event.get("event_name")
        if not isinstance(name, str) or not name:
            raise _invalid(f"data[{i}].event_name is required")
        self._check_time(i, event.get("event_time"))
        source = event.get("action_source")
        if source not in ACTION_SOURCES:
            raise _invalid(f"data[{i}].action_source is required and must be one of the enum")
        if "event_id" in event and not isinstance(event["event_id"], str):
            raise _invalid(f"data[{i}].event_id must be a string")
        user = event.get("user_data")
        if not isinstance(user, dict) or not user:
            raise _invalid(f"data[{i}].user_data needs a customer information parameter")
        self._check_user(i, user)
        if source == "website":
            if not event.get("event_source_url"):
                raise _invalid(f"data[{i}]: website events need event_source_url")
            if not user.get("client_user_agent"):
                raise _invalid(f"data[{i}]: website events need client_user_agent")
        custom = event.get("custom_data", {})
        if not isinstance(custom, dict):
            raise _invalid(f"data[{i}].custom_data must be an object")
        value = custom.get("value")
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise _invalid(f"data[{i}].custom_data.value must be a number")
        currency = custom.get("currency")
        if currency is not None and not (isinstance(currency, str) and _CURRENCY.match(currency)):
            raise _invalid(f"data[{i}].custom_data.currency must be ISO 4217")
        if name == "Purchase" and (value is None or currency is None):
            raise _invalid(f"data[{i}]: Purchase needs custom_data.value and currency")

    def _check_time(self, i: int, event_time: Any) -> None:
        if isinstance(event_time, bool) or not isinstance(event_time, int):
            raise _invalid(f"data[{i}].event_time must be an integer")
        if event_time >= 10**10:
            raise _invalid(f"data[{i}].event_time must be Unix seconds, not milliseconds")
        if event_time < self.now() - WINDOW_SECS:
            raise _invalid(f"data[{i}].event_time is more than 7 days in the past", 2804003)

    @staticmethod
    def _check_user(i: int, user: dict[str, Any]) -> None:
        for key in HASHED_KEYS:
            if key not in user:
                continue
            values = user[key] if isinstance(user[key], list) else [user[key]]
            if not values or not all(isinstance(v, str) and _HEX64.match(v) for v in values):
                raise _invalid(f"data[{i}].user_data.{key} must be SHA-256 lowercase hex")
        for key in ("fbc", "fbp"):
            if key in user and not (isinstance(user[key], str) and _COOKIE.match(user[key])):
                raise _invalid(f"data[{i}].user_data.{key} is malformed")
        if "client_ip_address" in user:
            try:
                ipaddress.ip_address(user["client_ip_address"])
            except ValueError as exc:
                raise _invalid(f"data[{i}].user_data.client_ip_address is not an IP") from exc
        agent = user.get("client_user_agent")
        if agent is not None and (not isinstance(agent, str) or _HEX64.match(agent)):
            raise _invalid(f"data[{i}].user_data.client_user_agent must be sent unhashed")

    def _remember(self, event: dict[str, Any], now: float) -> None:
        self.events.append(event)
        event_id = event.get("event_id")
        if not isinstance(event_id, str):
            return
        self.accepted.append(event_id)
        key = (self.pixel_id, event["event_name"], event_id)
        seen = self.dedup.get(key)
        if seen is not None and now - seen < DEDUP_SECS:
            self.repeats.append(event_id)
        else:
            self.dedup[key] = now
