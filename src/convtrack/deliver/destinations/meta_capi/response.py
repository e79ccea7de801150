"""A Conversions API answer to a delivery outcome, pure (destinations.md §1).

Meta accepts or refuses a request as a whole, so every outcome is for the
whole batch. Graph error codes decide the class:

- 1, 2 (and any error flagged ``is_transient``): transient, retried;
- 4, 17, 32, 341, 613 (rate limits) and 368 (temporarily blocked): throttled;
- 102, 104, 190 (the token) and 10, 200-299 (permissions): a setup error,
  the destination pauses and keeps the events;
- 100 (invalid parameter) and every other code: refused for good.

A 2xx whose ``events_received`` is not the batch size (or cannot be read) is
retried whole: Meta drops the copies it already has by event_id (48 h).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from convtrack.deliver.answers import by_status, excerpt, json_object, redact, retry_after_secs
from convtrack.deliver.base import Delivered, Outcome, Reject, Retry, SetupFault, Throttled

TRANSIENT_CODES = frozenset({1, 2})
THROTTLE_CODES = frozenset({4, 17, 32, 341, 613, 368})
SETUP_CODES = frozenset({10, 102, 104, 190}) | frozenset(range(200, 300))


def graph_error(answer: dict[str, Any] | None) -> dict[str, Any] | None:
    error = answer.get("error") if answer else None
    return error if isinstance(error, dict) else None


def _code(error: dict[str, Any]) -> int | None:
    code = error.get("code")
    if isinstance(code, bool):
        return None
    if isinstance(code, int):
        return code
    if isinstance(code, str) and code.isdigit():
        return int(code)
    return None


def read_response(
    status: int, headers: dict[str, str], body: bytes, *, sent: int, secrets: Iterable[str] = ()
) -> Outcome:
    """``sent``: the number of events in the request."""
    reason = redact(f"HTTP {status}: {excerpt(body)}", secrets)
    answer = json_object(body)
    after = retry_after_secs(headers.get("retry-after"))
    if 200 <= status < 300:
        received = answer.get("events_received") if answer else None
        if isinstance(received, int) and not isinstance(received, bool) and received == sent:
            return Delivered()
        return Retry(after_secs=after, reason=f"events_received is not {sent}: {reason}")
    error = graph_error(answer)
    code = _code(error) if error else None
    if code is not None and error is not None:
        if code in THROTTLE_CODES:
            return Throttled(after_secs=after, reason=reason)
        if code in TRANSIENT_CODES or error.get("is_transient") is True:
            return Retry(after_secs=after, reason=reason)
        if code in SETUP_CODES:
            return SetupFault(reason=reason)
        if status < 500:
            return Reject(reason=reason)
    return by_status(status, after, reason) or Reject(reason=reason)
