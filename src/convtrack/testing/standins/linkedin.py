"""LinkedIn Conversions API stand-in (destinations.md §4 and the §8 checklist).

Checks the three headers (``LinkedIn-Version`` as ``YYYYMM``), the bearer
token, ``BATCH_CREATE`` with ``{"elements": [...]}`` of at most 5,000, and
each element: the rule URN, ``conversionHappenedAt`` as 13-digit epoch
milliseconds within 90 days, ``amount`` a decimal string, ``user.userIds``
present with 64-hex ``SHA256_EMAIL`` values. Unknown fields are refused, as
Rest.li does. Answers BATCH_CREATE with one status per element in input
order; keeps the eventId dedup table (a repeat is answered 201 and not
counted again); ``fail_rows`` makes given eventIds fail with given statuses.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from typing import Any

from convtrack.testing.standins.base import Answer, Request, StandIn

PATH = "/rest/conversionEvents"
MAX_ELEMENTS = 5000
WINDOW_MS = 90 * 86_400_000
ID_TYPES = frozenset({"SHA256_EMAIL", "LINKEDIN_FIRST_PARTY_ADS_TRACKING_UUID", "ACXIOM_ID",
                      "ORACLE_MOAT_ID", "PLAINTEXT_IP_ADDRESS", "SHA256_IP_ADDRESS",
                      "GOOGLE_AID"})  # fmt: skip
ELEMENT_FIELDS = frozenset({"conversion", "conversionHappenedAt", "conversionValue", "eventId",
                            "user"})  # fmt: skip
USER_FIELDS = frozenset({"userIds", "userInfo", "externalIds"})
USER_INFO_FIELDS = frozenset({"firstName", "lastName", "companyName", "title", "countryCode"})
_RULE = re.compile(r"^urn:lla:llaPartnerConversion:\d+$")
_VERSION = re.compile(r"^\d{6}$")
_AMOUNT = re.compile(r"^-?\d+(\.\d+)?$")
_HEX64 = re.compile(r"^[a-f0-9]{64}$")


def error(status: int, code: str, message: str) -> dict[str, Any]:
    return {"status": status, "code": code, "message": message}


def answer(status: int, code: str, message: str) -> Answer:
    return Answer(status, {"content-type": "application/json"},
                  json.dumps(error(status, code, message)).encode())  # fmt: skip


def element_error(element: Any, now_ms: int) -> str | None:
    """Why LinkedIn would refuse this element (422), or None."""
    if not isinstance(element, dict):
        return "ERROR :: / :: not a record"
    unknown = set(element) - ELEMENT_FIELDS
    if unknown:
        return f"ERROR :: /{sorted(unknown)[0]} :: unrecognized field found but not allowed"
    conversion = element.get("conversion")
    if not isinstance(conversion, str) or not _RULE.fullmatch(conversion):
        return "ERROR :: /conversion :: not a urn:lla:llaPartnerConversion URN"
    happened = element.get("conversionHappenedAt")
    if not isinstance(happened, int) or isinstance(happened, bool):
        return "ERROR :: /conversionHappenedAt :: not a long"
    if len(str(happened)) != 13:
        return "ERROR :: /conversionHappenedAt :: must be epoch milliseconds (13 digits)"
    if now_ms - happened > WINDOW_MS:
        return "ERROR :: /conversionHappenedAt :: must be within the past 90 days"
    value = element.get("conversionValue")
    if value is not None:
        if not isinstance(value, dict) or set(value) != {"currencyCode", "amount"}:
            return "ERROR :: /conversionValue :: needs currencyCode and amount"
        if not isinstance(value["amount"], str) or not _AMOUNT.fullmatch(value["amount"]):
            return "ERROR :: /conversionValue/amount :: must be a decimal string"
        if not isinstance(value["currencyCode"], str) or not re.fullmatch(
            r"[A-Z]{3}", value["currencyCode"]
        ):
            return "ERROR :: /conversionValue/currencyCode :: not an ISO 4217 code"
    event_id = element.get("eventId")
    if event_id is not None and (not isinstance(event_id, str) or not 1 <= len(event_id) <= 64):
        return "ERROR :: /eventId :: must be a string of 1 to 64 characters"
    return user_error(element.get("user"))


def user_error(user: Any) -> str | None:
    if not isinstance(user, dict):
        return "ERROR :: /user :: field is required but not found"
    if set(user) - USER_FIELDS:
        return "ERROR :: /user :: unrecognized field found but not allowed"
    ids = user.get("userIds")
    if not isinstance(ids, list):
        return "ERROR :: /user/userIds :: field is required but not found"
    for item in ids:
        if not isinstance(item, dict) or set(item) != {"idType", "idValue"}:
            return "ERROR :: /user/userIds :: needs idType and idValue"
        if item["idType"] not in ID_TYPES or not isinstance(item["idValue"], str):
            return f"ERROR :: /user/userIds :: bad idType {item['idType']!r}"
        if item["idType"].startswith("SHA256_") and not _HEX64.fullmatch(item["idValue"]):
            return "ERROR :: /user/userIds :: SHA256 values must be 64 lowercase hex"
    info = user.get("userInfo")
    if info is not None:
        if not isinstance(info, dict) or set(info) - USER_INFO_FIELDS:
            return "ERROR :: /user/userInfo :: unrecognized field"
        if not info.get("firstName") or not info.get("lastName"):  # [S] Segment
            return "ERROR :: /user/userInfo :: firstName and lastName are required"
        if "countryCode" in info and not re.fullmatch(r"[A-Z]{2}", str(info["countryCode"])):
            return "ERROR :: /user/userInfo/countryCode :: not an ISO 3166 alpha-2 code"
    if not ids and info is None:
        return "ERROR :: /user :: no user identifier"
    return None


class LinkedInStandIn(StandIn):
    def __init__(
        self,
        *,
        token: str = "li-test-token",
        now_ms: Callable[[], int] | None = None,
        sunset_versions: frozenset[str] = frozenset({"202511"}),
    ) -> None:
        super().__init__()
        self.token = token
        self.now_ms = now_ms or (lambda: time.time_ns() // 1_000_000)
        self.sunset_versions = sunset_versions
        self.seen: set[str] = set()  # the eventId dedup table
        self.duplicates: list[str] = []
        self.elements: list[dict[str, Any]] = []  # accepted, first copies only
        self.fail_rows: dict[str, list[int]] = {}  # eventId -> element statuses to answer

    def check(self, request: Request) -> Answer:
        if request.method != "POST" or request.path != PATH:
            return answer(404, "NOT_FOUND", f"no resource at {request.method} {request.path}")
        headers = request.headers
        if headers.get("authorization") != f"Bearer {self.token}":
            return answer(401, "INVALID_ACCESS_TOKEN", "Invalid access token")
        version = headers.get("linkedin-version")
        if version is None:
            return answer(400, "VERSION_MISSING", "A version must be present in LinkedIn-Version")
        if not _VERSION.fullmatch(version):
            return answer(400, "INVALID_VERSION", f"Invalid version {version}, use YYYYMM")
        if version in self.sunset_versions:
            return answer(426, "NONEXISTENT_VERSION", f"Requested version {version} is not active")
        if headers.get("x-restli-protocol-version") != "2.0.0":
            return answer(400, "ILLEGAL_ARGUMENT", "X-Restli-Protocol-Version must be 2.0.0")
        if not headers.get("content-type", "").startswith("application/json"):
            return answer(415, "UNSUPPORTED_MEDIA_TYPE", "Content-Type must be application/json")
        try:
            body = json.loads(request.body)
        except ValueError:
            return answer(400, "ILLEGAL_ARGUMENT", "body is not JSON")
        if headers.get("x-restli-method", "").upper() != "BATCH_CREATE":
            status, message = self._create(body)
            if status >= 300:
                return answer(status, "VALIDATION", message)
            return Answer(201, {"x-restli-id": str(body.get("eventId", ""))})
        elements = body.get("elements") if isinstance(body, dict) else None
        if not isinstance(elements, list) or set(body) != {"elements"}:
            return answer(400, "ILLEGAL_ARGUMENT", 'BATCH_CREATE needs {"elements": [...]}')
        if not 1 <= len(elements) <= MAX_ELEMENTS:
            return answer(422, "TOO_MANY_ELEMENTS", f"1 to {MAX_ELEMENTS} elements per batch")
        results = []
        for element in elements:
            status, message = self._create(element)
            if status >= 300:
                results.append({"status": status, "error": error(status, "VALIDATION", message)})
            else:
                results.append({"status": status})
        return Answer(200, {"content-type": "application/json"},
                      json.dumps({"elements": results}).encode())  # fmt: skip

    def _create(self, element: Any) -> tuple[int, str]:
        """One element: its status and message; accepted ones are recorded once per eventId."""
        event_id = element.get("eventId") if isinstance(element, dict) else None
        planned = self.fail_rows.get(event_id) if isinstance(event_id, str) else None
        if planned:
            status = planned.pop(0)
            return status, f"planned failure {status}"
        problem = element_error(element, self.now_ms())
        if problem is not None:
            return 422, problem
        if event_id is not None:
            if event_id in self.seen:
                self.duplicates.append(event_id)
                return 201, ""
            self.seen.add(event_id)
            self.accepted.append(event_id)
        self.elements.append(element)
        return 201, ""
