"""A stand-in for Google Ads: uploadClickConversions (destinations.md 2a) and the Data
Manager API's events:ingest (2b), checking the section 8 checklist.

uploadClickConversions: ``Authorization: Bearer`` required (``developer-token``
optional, as Google ignores it since 2026-09-09); ``partialFailure`` must be
true (else ``PARTIAL_FAILURE_MODE_REQUIRED``); at most 2,000 conversions;
``conversionDateTime`` as ``yyyy-mm-dd hh:mm:ss+hh:mm``; exactly one of
gclid/gbraid/wbraid or at most 5 hashed ``userIdentifiers``; an ``orderId``
table per conversion action (``ORDER_ID_ALREADY_IN_USE``). Row errors come back
in ``partialFailureError`` with ``fieldPathElements`` indexes, failed rows as
``{}`` in ``results``, ``jobId`` as a string. Whole-request errors are
google.rpc.Status bodies carrying a ``GoogleAdsFailure``.

events:ingest: the same bearer token; 1 to 10 destinations with an
``operatingAccount`` and ``productDestinationId``; 1 to 2,000 events each with an
RFC 3339 ``eventTimestamp``, at most one click id, hashed ``userIdentifiers``
(``emailAddress`` / ``phoneNumber``, 64-hex) and ``encoding: HEX`` whenever
``userData`` is sent. It fails fast: one bad event refuses the request (400
with ``google.rpc.BadRequest`` field violations); else ``{"requestId": …}``.

Faults beyond the base plan: ``row_faults`` (order id -> error codes, each
used once) makes uploadClickConversions fail that row with the code.
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from typing import Any

from convtrack.testing.standins.base import Answer, Request, StandIn

STALL_SECS = 60.0

MAX_CONVERSIONS = 2000
MAX_UPLOAD_IDENTIFIERS = 5
MAX_DM_IDENTIFIERS = 10
MAX_DM_DESTINATIONS = 10
CLICK_IDS = ("gclid", "gbraid", "wbraid")
_UPLOAD_PATH = re.compile(r"^/(v\d+)/customers/(\d{10}):uploadClickConversions$")
_INGEST_PATH = re.compile(r"^/(v\d+)/events:ingest$")
_DATE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}[+-]\d{2}:\d{2}$")
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$")
_ACTION = re.compile(r"^customers/(\d{10})/conversionActions/(\d+)$")
_HEX64 = re.compile(r"^[a-f0-9]{64}$")
_CURRENCY = re.compile(r"^[A-Z]{3}$")
_UPLOAD_CONSENT = frozenset({"GRANTED", "DENIED", "UNSPECIFIED", "UNKNOWN"})
_DM_CONSENT = frozenset({"CONSENT_GRANTED", "CONSENT_DENIED", "CONSENT_STATUS_UNSPECIFIED"})
_EVENT_SOURCES = frozenset({"WEB", "APP", "IN_STORE", "PHONE", "OTHER"})
_ERROR_TYPE = {"TRANSIENT_ERROR": "internalError", "INTERNAL_ERROR": "internalError",
               "PARTIAL_FAILURE_MODE_REQUIRED": "partialFailureError",
               "REQUIRED": "fieldError", "INVALID_VALUE": "requestError"}  # fmt: skip
_HTTP_STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
                429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE",
                504: "DEADLINE_EXCEEDED"}  # fmt: skip


def ads_error(code: str, message: str, index: int | None = None) -> dict[str, Any]:
    """One GoogleAdsError; ``index`` names the row (conversions[index])."""
    error: dict[str, Any] = {
        "errorCode": {_ERROR_TYPE.get(code, "conversionUploadError"): code},
        "message": message,
    }
    if index is not None:
        error["location"] = {"fieldPathElements": [{"fieldName": "conversions", "index": index}]}
    return error


def ads_failure(version: str, errors: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "@type": f"type.googleapis.com/google.ads.googleads.{version}.errors.GoogleAdsFailure",
        "errors": errors,
        "requestId": "standin-" + uuid.uuid4().hex[:12],
    }


def status_body(status: int, message: str, details: list[dict[str, Any]]) -> bytes:
    """A google.rpc.Status as the REST APIs send it."""
    return json.dumps({"error": {"code": status, "message": message,
                                 "status": _HTTP_STATUS.get(status, "UNKNOWN"),
                                 "details": details}}).encode()  # fmt: skip


def ads_request_error(status: int, code: str, message: str, version: str = "v26") -> Answer:
    """A whole-request Google Ads API error, e.g. ``ads_request_error(403,
    "CUSTOMER_NOT_ALLOWLISTED_FOR_THIS_FEATURE", …)`` for a fault plan."""
    details = [ads_failure(version, [ads_error(code, message)])]
    return Answer(status, {"content-type": "application/json"},
                  status_body(status, message, details))  # fmt: skip


def dm_error(status: int, reason: str, message: str,
             violations: list[dict[str, str]] | None = None) -> Answer:  # fmt: skip
    """A Data Manager API error: ErrorInfo with the reason, BadRequest with violations."""
    details: list[dict[str, Any]] = [{"@type": "type.googleapis.com/google.rpc.ErrorInfo",
                                      "reason": reason,
                                      "domain": "datamanager.googleapis.com"}]  # fmt: skip
    if violations:
        details.append({"@type": "type.googleapis.com/google.rpc.BadRequest",
                        "fieldViolations": violations})  # fmt: skip
    return Answer(status, {"content-type": "application/json"},
                  status_body(status, message, details))  # fmt: skip


def _json(answer: dict[str, Any]) -> Answer:
    return Answer(200, {"content-type": "application/json", "request-id": "standin-req"},
                  json.dumps(answer).encode())  # fmt: skip


class GoogleAdsStandIn(StandIn):
    def __init__(self, token: str = "ya29.test-token") -> None:
        self.token = token
        self.order_ids: dict[str, set[str]] = {}  # conversion action -> order ids recorded
        self.transactions: set[str] = set()  # Data Manager transactionIds recorded
        self.received_rows: list[str] = []  # every row's order/transaction id that arrived
        self.row_faults: dict[str, list[str]] = {}
        self.job_id = 2147483650
        # The next request is recorded, then its answer waits (until close): a crash of
        # the sender after the platform took the events, before it heard back.
        self.stall_next = False
        self._release = threading.Event()
        super().__init__()

    def check(self, request: Request) -> Answer:
        if request.headers.get("authorization") != f"Bearer {self.token}":
            missing = "Request is missing required authentication credential."
            return ads_request_error(401, "UNAUTHENTICATED", missing)
        try:
            body = json.loads(request.body)
        except ValueError:
            return ads_request_error(400, "INVALID_VALUE", "Invalid JSON payload received.")
        if not isinstance(body, dict):
            return ads_request_error(400, "INVALID_VALUE", "The body is not an object.")
        if match := _UPLOAD_PATH.match(request.path):
            return self._upload(match.group(1), match.group(2), body)
        if _INGEST_PATH.match(request.path):
            return self._ingest(body)
        return Answer(404, {}, b"Not Found")

    # -- uploadClickConversions ----------------------------------------------------------

    def _upload(self, version: str, customer: str, body: dict[str, Any]) -> Answer:
        if body.get("partialFailure") is not True:
            return ads_request_error(400, "PARTIAL_FAILURE_MODE_REQUIRED",
                                     "The partial failure field was false.", version)  # fmt: skip
        conversions = body.get("conversions")
        if not isinstance(conversions, list) or not conversions:
            return ads_request_error(400, "REQUIRED", "conversions is required.", version)
        if len(conversions) > MAX_CONVERSIONS:
            return ads_request_error(400, "TOO_MANY_CONVERSIONS_IN_REQUEST",
                                     "More than 2000 conversions.", version)  # fmt: skip
        errors: list[dict[str, Any]] = []
        results: list[dict[str, Any]] = []
        for index, row in enumerate(conversions):
            problem = self._upload_row(customer, row)
            if problem is None:
                results.append({key: row[key] for key in
                                (*CLICK_IDS, "conversionAction", "conversionDateTime")
                                if key in row})  # fmt: skip
            else:
                errors.append(ads_error(problem[0], problem[1], index))
                results.append({})
        answer: dict[str, Any] = {"results": results, "jobId": str(self.job_id)}
        self.job_id += 1
        if errors:
            first = errors[0]
            where = first["location"]["fieldPathElements"][0]["index"]
            answer["partialFailureError"] = {
                "code": 3,
                "message": f"{first['message']}, at conversions[{where}]",
                "details": [ads_failure(version, errors)],
            }
        return _json(answer)

    def _upload_row(self, customer: str, row: Any) -> tuple[str, str] | None:
        """The row's error (code, message), or None once it is recorded."""
        if not isinstance(row, dict):
            return "INVALID_VALUE", "A conversion is not an object."
        order_id = row.get("orderId")
        if isinstance(order_id, str):
            self.received_rows.append(order_id)
        action = _ACTION.match(str(row.get("conversionAction", "")))
        if action is None or action.group(1) != customer:
            return "NO_CONVERSION_ACTION_FOUND", "conversionAction is not this customer's."
        if not _DATE_TIME.match(str(row.get("conversionDateTime", ""))):
            return "INVALID_VALUE", "conversionDateTime must be yyyy-mm-dd hh:mm:ss+|-hh:mm."
        clicks = [kind for kind in CLICK_IDS if row.get(kind)]
        if "gbraid" in clicks and "wbraid" in clicks:
            return "GBRAID_WBRAID_BOTH_SET", "gbraid and wbraid are both set."
        if len(clicks) > 1:
            return "INVALID_VALUE", "Only one click id may be set."
        identifiers = row.get("userIdentifiers", [])
        if not isinstance(identifiers, list) or len(identifiers) > MAX_UPLOAD_IDENTIFIERS:
            return "INVALID_USER_IDENTIFIER", "At most 5 user identifiers."
        for identifier in identifiers:
            hashed = [identifier.get(k) for k in ("hashedEmail", "hashedPhoneNumber")
                      if isinstance(identifier, dict) and k in identifier]  # fmt: skip
            if len(hashed) != 1 or not _HEX64.match(str(hashed[0])):
                return "INVALID_USER_IDENTIFIER", "A user identifier must be one 64-hex hash."
        if not clicks and not identifiers:
            return "REQUIRED", "A click id or user identifiers are required."
        if "conversionValue" in row and not isinstance(row["conversionValue"], (int, float)):
            return "INVALID_VALUE", "conversionValue must be a number."
        if "currencyCode" in row and not _CURRENCY.match(str(row["currencyCode"])):
            return "INVALID_VALUE", "currencyCode must be ISO 4217."
        consent = row.get("consent", {})
        if not isinstance(consent, dict) or not set(consent.values()) <= _UPLOAD_CONSENT:
            return "INVALID_VALUE", "consent values are GRANTED or DENIED."
        if isinstance(order_id, str) and self.row_faults.get(order_id):
            code = self.row_faults[order_id].pop(0)
            return code, f"Injected {code}."
        if isinstance(order_id, str):
            recorded = self.order_ids.setdefault(action.group(2), set())
            if order_id in recorded:
                return "ORDER_ID_ALREADY_IN_USE", "The order id was already used."
            recorded.add(order_id)
            self.accepted.append(order_id)
        return None

    # -- Data Manager events:ingest ------------------------------------------------------

    def _ingest(self, body: dict[str, Any]) -> Answer:
        destinations = body.get("destinations")
        if not isinstance(destinations, list) or not 1 <= len(destinations) <= MAX_DM_DESTINATIONS:
            reason = "TOO_MANY_DESTINATIONS" if destinations else "REQUIRED_FIELD_MISSING"
            return dm_error(400, reason, "destinations: 1 to 10 are required.")
        references: set[str] = set()
        for index, destination in enumerate(destinations):
            wrong = self._destination_problem(destination)
            if wrong is not None:
                violation = {
                    "field": f"destinations[{index}]",
                    "reason": wrong,
                    "description": "operatingAccount and productDestinationId",
                }
                return dm_error(400, wrong, f"destinations[{index}] is not valid.", [violation])
            if destination.get("reference"):
                if destination["reference"] in references:
                    return dm_error(400, "DUPLICATE_DESTINATION_REFERENCE", "Two references.")
                references.add(destination["reference"])
        events = body.get("events")
        if not isinstance(events, list) or not events:
            return dm_error(400, "REQUIRED_FIELD_MISSING", "events is required.")
        if len(events) > MAX_CONVERSIONS:
            return dm_error(400, "TOO_MANY_EVENTS", "At most 2000 events per request.")
        violations = []
        for index, event in enumerate(events):
            problem = self._event_problem(event, references, body.get("encoding"))
            if problem is not None:
                violations.append({"field": f"events[{index}].{problem[1]}",
                                   "reason": problem[0], "description": problem[2]})  # fmt: skip
        if violations:
            return dm_error(400, violations[0]["reason"], "There was a problem with the request.",
                            violations)  # fmt: skip
        for event in events:
            transaction = event.get("transactionId")
            if isinstance(transaction, str):
                self.received_rows.append(transaction)
                if transaction not in self.transactions:
                    self.transactions.add(transaction)
                    self.accepted.append(transaction)
        return _json({"requestId": str(uuid.uuid4())})

    @staticmethod
    def _destination_problem(destination: Any) -> str | None:
        if not isinstance(destination, dict):
            return "INVALID_DESTINATION"
        account = destination.get("operatingAccount")
        if not isinstance(account, dict) or account.get("accountType") != "GOOGLE_ADS":
            return "INVALID_DESTINATION"
        if not re.fullmatch(r"\d{10}", str(account.get("accountId", ""))):
            return "INVALID_DESTINATION"
        login = destination.get("loginAccount")
        login_id = str(login.get("accountId", "")) if isinstance(login, dict) else ""
        if login is not None and not re.fullmatch(r"\d{10}", login_id):
            return "INVALID_DESTINATION"
        if not re.fullmatch(r"\d+", str(destination.get("productDestinationId", ""))):
            return "INVALID_CONVERSION_ACTION_ID"
        return None

    @staticmethod
    def _event_problem(
        event: Any, references: set[str], encoding: Any
    ) -> tuple[str, str, str] | None:
        """(reason, field, description) of the event's first problem, or None."""
        if not isinstance(event, dict):
            return "INVALID_EVENT", "", "not an object"
        if not _RFC3339.match(str(event.get("eventTimestamp", ""))):
            return "INVALID_FORMAT", "event_timestamp", "an RFC 3339 timestamp is required"
        for ref in event.get("destinationReferences", []):
            if ref not in references:
                return "INVALID_DESTINATION", "destination_references", "unknown reference"
        ads = event.get("adIdentifiers", {})
        clicks = [kind for kind in CLICK_IDS if isinstance(ads, dict) and ads.get(kind)]
        if len(clicks) > 1:
            return "INVALID_ARGUMENT", "ad_identifiers", "at most one click id"
        identifiers = (event.get("userData") or {}).get("userIdentifiers", [])
        if event.get("userData") is not None:
            if encoding != "HEX":
                return "INVALID_ARGUMENT", "encoding", "encoding HEX is required with userData"
            if not isinstance(identifiers, list) or not 1 <= len(identifiers) <= MAX_DM_IDENTIFIERS:
                return "TOO_MANY_USER_IDENTIFIERS", "user_data", "1 to 10 identifiers"
            for identifier in identifiers:
                hashed = [identifier.get(k) for k in ("emailAddress", "phoneNumber")
                          if isinstance(identifier, dict) and k in identifier]  # fmt: skip
                if len(hashed) != 1 or not _HEX64.match(str(hashed[0])):
                    return "INVALID_SHA256_FORMAT", "user_data", "identifiers are 64-hex SHA-256"
        if not clicks and not identifiers:
            return "NO_IDENTIFIERS_PROVIDED", "", "no user identifiers or ad identifiers"
        if "conversionValue" in event and not isinstance(event["conversionValue"], (int, float)):
            return "INVALID_NUMBER_FORMAT", "conversion_value", "a number is required"
        if "currency" in event and not _CURRENCY.match(str(event["currency"])):
            return "INVALID_CURRENCY_CODE", "currency", "ISO 4217"
        if event.get("eventSource", "WEB") not in _EVENT_SOURCES:
            return "INVALID_ENUM_VALUE", "event_source", "WEB, APP, IN_STORE, PHONE or OTHER"
        consent = event.get("consent", {})
        if not isinstance(consent, dict) or not set(consent.values()) <= _DM_CONSENT:
            return "INVALID_ENUM_VALUE", "consent", "CONSENT_GRANTED or CONSENT_DENIED"
        return None

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
