"""LinkedIn's answer to a delivery outcome, pure.

destinations.md §4: BATCH_CREATE answers HTTP 200 with one status per input
element, in input order; a single create answers 201. A whole-request 401
(token) or 403 (scope or ad-account role) is a setup error, and so is 426
(the pinned ``LinkedIn-Version`` is no longer served). 429 is throttling
(LinkedIn sends no Retry-After, so the runner's throttle policy applies),
5xx transient, other 4xx (400, 422: validation) permanent.
"""

from __future__ import annotations

from collections.abc import Sequence
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

_SETUP = frozenset({401, 403, 426})
_MESSAGE_CHARS = 300


def error_message(answer: dict[str, Any] | None, body: bytes) -> str:
    """LinkedIn's ``message`` (and ``code`` when given), else the start of the body."""
    if answer is not None and isinstance(answer.get("message"), str):
        code = answer.get("code") or answer.get("serviceErrorCode")
        message = answer["message"][:_MESSAGE_CHARS]
        return f"{code}: {message}" if code else message
    return excerpt(body)


def _element_message(element: dict[str, Any]) -> str:
    error = element.get("error")
    if isinstance(error, dict):
        return error_message(error, b"")
    if isinstance(element.get("message"), str):
        return error_message(element, b"")
    return "no message"


def read_batch(events: Sequence[Forwarded], answer: dict[str, Any] | None, body: bytes) -> Outcome:
    """Per-element statuses: 2xx delivered, 429/5xx retried, other 4xx dead-lettered."""
    elements = answer.get("elements") if answer is not None else None
    if not isinstance(elements, list) or len(elements) != len(events):
        # Which rows landed is unknown; LinkedIn keeps one copy per eventId, so the
        # whole batch may safely go again.
        reason = f"HTTP 200 without one status per event: {excerpt(body)}"
        return Retry(after_secs=None, reason=reason)
    retry: list[str] = []
    rejected: dict[str, str] = {}
    reasons: list[str] = []
    for event, element in zip(events, elements, strict=True):
        status = element.get("status") if isinstance(element, dict) else None
        if isinstance(status, int) and 200 <= status < 300:
            continue
        message = _element_message(element) if isinstance(element, dict) else "no status"
        reason = f"element status {status}: {message}"
        if isinstance(status, int) and (status == 429 or status >= 500):
            retry.append(event.event_id)
        else:
            rejected[event.event_id] = reason
        if len(reasons) < 3:
            reasons.append(f"{event.event_id}: {reason}")
    if not retry and not rejected:
        return Delivered()
    failed = len(retry) + len(rejected)
    summary = f"{failed} of {len(events)} elements failed: " + "; ".join(reasons)
    return RetryPartial(event_ids=retry, reason=summary, rejected=rejected)


def read_response(
    events: Sequence[Forwarded], status: int, headers: dict[str, str], body: bytes
) -> Outcome:
    if status == 201:  # a single create
        return Delivered()
    answer = json_object(body)
    if status == 200:
        return read_batch(events, answer, body)
    if 200 <= status < 300:
        return Delivered()
    reason = f"HTTP {status}: {error_message(answer, body)}"
    after = retry_after_secs(headers.get("retry-after"))
    if status == 429:
        return Throttled(after_secs=after, reason=reason)
    if status >= 500 or status == 408:
        return Retry(after_secs=after, reason=reason)
    if status in _SETUP:
        return SetupFault(reason=reason)
    return Reject(reason=reason)
