"""Google Ads answers to outcomes, pure (destinations.md 2a, 2b).

uploadClickConversions runs in partial-failure mode: HTTP 200 with a
``partialFailureError`` whose errors name their rows by
``location.fieldPathElements[].index``. A row already recorded (same order id)
counts as delivered. Errors of the whole request are gRPC statuses mapped to
HTTP: 401/403 are setup faults, 429 is quota, 5xx is transient, 400 is for good.
The Data Manager API has no per-row results: a request fails or passes whole.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

from convtrack.deliver.answers import excerpt, json_object, retry_after_secs
from convtrack.deliver.base import (
    Delivered,
    Forwarded,
    Outcome,
    Reject,
    Retry,
    RetryPartial,
    SetupFault,
    Throttled,
)

TOO_RECENT_RETRY_SECS = 6 * 3600.0  # "retry after 6 hours have passed"
# The daily operations quota has no retryAfter: waiting seconds only burns attempts.
DAILY_QUOTA_RETRY_SECS = 3600.0

ALREADY_RECORDED = frozenset({
    "ORDER_ID_ALREADY_IN_USE", "DUPLICATE_ORDER_ID",
    "CLICK_CONVERSION_ALREADY_EXISTS", "DUPLICATE_CLICK_CONVERSION_IN_REQUEST",
})  # fmt: skip
TOO_RECENT = frozenset({"TOO_RECENT_EVENT", "TOO_RECENT_CONVERSION_ACTION"})
TRANSIENT = frozenset({"TRANSIENT_ERROR", "INTERNAL_ERROR", "DEADLINE_EXCEEDED",
                       "ERROR_CODE_NOT_PUBLISHED", "RESOURCE_TEMPORARILY_EXHAUSTED"})  # fmt: skip
# The account or the setup is at fault, not the events: pause, keep the events.
SETUP = frozenset({
    "CUSTOMER_NOT_ALLOWLISTED_FOR_THIS_FEATURE", "CUSTOMER_NOT_ACCEPTED_CUSTOMER_DATA_TERMS",
    "CUSTOMER_NOT_ENABLED_ENHANCED_CONVERSIONS_FOR_LEADS", "NO_CONVERSION_ACTION_FOUND",
    "INVALID_CONVERSION_ACTION_TYPE", "UNAUTHORIZED_CUSTOMER", "UNAUTHENTICATED",
    "PERMISSION_DENIED", "TERMS_AND_CONDITIONS_NOT_SIGNED", "INVALID_CONVERSION_ACTION_ID",
    "INVALID_DESTINATION", "DESTINATION_ACCOUNT_NOT_ENABLED_ENHANCED_CONVERSIONS_FOR_LEADS",
    "DESTINATION_ACCOUNT_DATA_POLICY_PROHIBITS_ENHANCED_CONVERSIONS",
    "DESTINATION_ACCOUNT_ENHANCED_CONVERSIONS_TERMS_NOT_SIGNED",
})  # fmt: skip
_SETUP_ERROR_TYPES = frozenset({"authenticationError", "authorizationError"})
_EVENT_INDEX = re.compile(r"\bevents\[(\d+)\]")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s*$")


class GoogleError:
    """One error of a Google answer: its code name, message and row index (if any)."""

    __slots__ = ("code", "error_type", "index", "message")

    def __init__(self, code: str, error_type: str, message: str, index: int | None) -> None:
        self.code = code
        self.error_type = error_type
        self.message = message
        self.index = index

    def __str__(self) -> str:
        return f"{self.code}: {self.message}" if self.message else self.code

    @property
    def is_setup(self) -> bool:
        return self.code in SETUP or self.error_type in _SETUP_ERROR_TYPES

    @property
    def is_transient(self) -> bool:
        return self.code in TRANSIENT or self.error_type == "internalError"


def google_ads_errors(failure: dict[str, Any]) -> list[GoogleError]:
    """The errors of a ``GoogleAdsFailure`` carried in a status's ``details``."""
    found = []
    for detail in _dicts(failure.get("details")):
        for error in _dicts(detail.get("errors")):
            code_map = _obj(error.get("errorCode"))
            error_type, code = next(iter(code_map.items()), ("", "UNKNOWN"))
            index = None
            location = _obj(error.get("location"))
            for element in _dicts(location.get("fieldPathElements")):
                if element.get("fieldName") == "conversions" and isinstance(
                    element.get("index"), int
                ):
                    index = element["index"]
            found.append(GoogleError(str(code), str(error_type), str(error.get("message", "")),
                                     index))  # fmt: skip
    return found


def _obj(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _dicts(value: object) -> Iterable[dict[str, Any]]:
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def _retry_delay(status_body: dict[str, Any]) -> float | None:
    """A ``retryDelay`` ("30s") from RetryInfo or Google Ads QuotaErrorDetails, if any."""
    for detail in _dicts(status_body.get("details")):
        candidates = [detail.get("retryDelay")]
        for error in _dicts(detail.get("errors")):
            details = _obj(error.get("details"))
            quota = details.get("quotaErrorDetails")
            if isinstance(quota, dict):
                candidates.append(quota.get("retryDelay"))
        for candidate in candidates:
            match = _DURATION.match(candidate) if isinstance(candidate, str) else None
            if match:
                return float(match.group(1))
    return None


# -- uploadClickConversions -----------------------------------------------------------


def read_click_upload(
    events: Sequence[Forwarded], status: int, headers: dict[str, str], body: bytes
) -> Outcome:
    if not 200 <= status < 300:
        return _request_failed(status, headers, body)
    answer = json_object(body)
    if answer is None:
        # Cut off (2,000 results can pass the answer cap) or unreadable: send again;
        # rows already recorded come back ORDER_ID_ALREADY_IN_USE, i.e. delivered.
        return Retry(after_secs=None, reason=f"HTTP {status}: unreadable answer {excerpt(body)}")
    failure = answer.get("partialFailureError")
    if not isinstance(failure, dict) or not failure:
        return Delivered()
    errors = google_ads_errors(failure)
    if not errors:  # a failure we cannot attribute: every row may have failed
        return Retry(after_secs=None, reason=f"partial failure: {failure.get('message', '')}")
    return _rows_outcome(events, errors, _request_id(headers, answer))


def _rows_outcome(
    events: Sequence[Forwarded], errors: list[GoogleError], request_id: str
) -> Outcome:
    setup = [error for error in errors if error.is_setup]
    if setup:
        return SetupFault(reason=f"{setup[0]}{request_id}")
    by_row: dict[int, list[GoogleError]] = {}
    for error in errors:
        rows = range(len(events)) if error.index is None else [error.index]
        for row in rows:
            if 0 <= row < len(events):
                by_row.setdefault(row, []).append(error)
    retry: list[str] = []
    rejected: dict[str, str] = {}
    too_recent = False
    for row, row_errors in sorted(by_row.items()):
        failing = [e for e in row_errors if e.code not in ALREADY_RECORDED]
        if not failing:
            continue  # already recorded: delivered
        event_id = events[row].event_id
        final = [e for e in failing if e.code not in TOO_RECENT and not e.is_transient]
        if final:
            rejected[event_id] = "; ".join(str(e) for e in final)[:500] + request_id
        else:
            retry.append(event_id)
            too_recent = too_recent or any(e.code in TOO_RECENT for e in failing)
    if not retry and not rejected:
        return Delivered()
    codes = sorted({e.code for e in errors if e.code not in ALREADY_RECORDED})
    reason = f"partial failure, {len(retry)} to retry, {len(rejected)} rejected: {', '.join(codes)}"
    return RetryPartial(
        event_ids=retry,
        reason=reason + request_id,
        after_secs=TOO_RECENT_RETRY_SECS if too_recent else None,
        rejected=rejected,
    )


def _request_id(headers: dict[str, str], answer: dict[str, Any] | None = None) -> str:
    request_id = headers.get("request-id", "")
    if not request_id and answer is not None:
        for detail in _dicts(_obj(answer.get("partialFailureError")).get("details")):
            request_id = str(detail.get("requestId", ""))
    return f" (request-id {request_id})" if request_id else ""


def _request_failed(status: int, headers: dict[str, str], body: bytes) -> Outcome:
    """A whole-request error: a google.rpc.Status, maybe with a GoogleAdsFailure."""
    answer = json_object(body) or {}
    status_body = _obj(answer.get("error"))
    errors = google_ads_errors(status_body)
    # Data Manager errors name their cause in a google.rpc.ErrorInfo ``reason``.
    reasons = [str(d["reason"]) for d in _dicts(status_body.get("details")) if d.get("reason")]
    codes = [e.code for e in errors] + reasons
    grpc_status = str(status_body.get("status", ""))
    message = str(status_body.get("message", "")) or excerpt(body)
    label = ", ".join(code for code in dict.fromkeys([grpc_status, *codes]) if code)
    reason = f"HTTP {status}{' ' + label if label else ''}: {excerpt(message.encode())}"
    reason += _request_id(headers)
    if (
        status in (401, 403)
        or any(e.is_setup for e in errors)
        or SETUP.intersection([grpc_status, *reasons])
    ):
        return SetupFault(reason=reason)
    if status == 429 or grpc_status == "RESOURCE_EXHAUSTED":
        after = retry_after_secs(headers.get("retry-after"))
        if after is None:
            after = _retry_delay(status_body)
        if after is None and "RESOURCE_EXHAUSTED" in codes:  # the daily operations quota
            after = DAILY_QUOTA_RETRY_SECS
        return Throttled(after_secs=after, reason=reason)
    if status >= 500 or status == 408:
        return Retry(after_secs=retry_after_secs(headers.get("retry-after")), reason=reason)
    return Reject(reason=reason)


# -- Data Manager events:ingest --------------------------------------------------------


def read_data_manager(
    events: Sequence[Forwarded], status: int, headers: dict[str, str], body: bytes
) -> Outcome:
    if 200 <= status < 300:
        return Delivered()  # {"requestId": …}: accepted; processing is asynchronous
    outcome = _request_failed(status, headers, body)
    if not isinstance(outcome, Reject) or status != 400:
        return outcome
    # Fast fail: one bad event fails the request. When the violations name their
    # events, only those are rejected and the others are sent again without them.
    bad = _violating_events(events, body)
    if not bad or len(bad) == len(events):
        return outcome
    return RetryPartial(
        event_ids=[e.event_id for e in events if e.event_id not in bad],
        reason=f"{len(bad)} event(s) refused; the rest sent again: {outcome.reason}",
        rejected=bad,
    )


def _violating_events(events: Sequence[Forwarded], body: bytes) -> dict[str, str]:
    answer = json_object(body) or {}
    status_body = _obj(answer.get("error"))
    bad: dict[str, str] = {}
    for detail in _dicts(status_body.get("details")):
        for violation in _dicts(detail.get("fieldViolations")):
            field = str(violation.get("field", ""))
            match = _EVENT_INDEX.search(field)
            if match and int(match.group(1)) < len(events):
                event_id = events[int(match.group(1))].event_id
                text = f"{violation.get('reason', 'INVALID_ARGUMENT')} {field}: "
                text += str(violation.get("description", ""))
                bad[event_id] = (bad.get(event_id, "") + "; " + text).lstrip("; ")[:500]
    return bad
