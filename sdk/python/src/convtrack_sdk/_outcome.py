"""What one ``POST /v1/batch`` answer means for the events it carried (pure).

Delivered(accepted, rejected, retry)   2xx, or 400 with the per-event list:
                                       rejects are final; ``rate_limited`` ones retry
Retry(after)                           network error, 408, 429, 5xx: resend all
Split                                  413 for several events: resend in halves
Refused(reason)                        any other 4xx: no resend can succeed
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from convtrack_sdk._http import Answer, error_name

RETRY_CODES = frozenset({"rate_limited"})  # per-event rejects that a later try may pass


@dataclass(frozen=True)
class Rejection:
    """One event the server refused, with its stable codes (``timestamp_too_old``, …)."""

    event_id: str | None
    seq: int
    codes: tuple[str, ...]
    errors: tuple[dict[str, str], ...]


@dataclass(frozen=True)
class Delivered:
    accepted: int
    rejected: tuple[tuple[int, tuple[dict[str, str], ...]], ...]  # index, errors
    retry: tuple[int, ...]  # indexes to send again


@dataclass(frozen=True)
class Retry:
    after_secs: float | None
    reason: str


@dataclass(frozen=True)
class Split:
    limit_bytes: int | None = None  # the server's body limit, when its answer says it


@dataclass(frozen=True)
class Refused:
    reason: str
    status: int
    errors: tuple[dict[str, str], ...] = ()  # a whole-body validation failure's errors


Outcome = Delivered | Retry | Split | Refused


def _errors(raw: object) -> tuple[dict[str, str], ...]:
    if not isinstance(raw, list):
        return ()
    return tuple({k: str(v) for k, v in item.items()} for item in raw if isinstance(item, dict))


def _per_event(body: object, count: int) -> Delivered | None:
    """The batch answer ``{"accepted": N, "rejected": [{"index": i, "errors": […]}]}``."""
    if not isinstance(body, dict) or not isinstance(body.get("rejected"), list):
        return None
    rejected: list[tuple[int, tuple[dict[str, str], ...]]] = []
    retry: list[int] = []
    for item in body["rejected"]:
        if not isinstance(item, dict):
            continue
        index = item.get("index")
        if not isinstance(index, int) or not 0 <= index < count:
            continue
        errors = _errors(item.get("errors"))
        codes = {e.get("code", "") for e in errors}
        if codes and codes <= RETRY_CODES:
            retry.append(index)
        else:
            rejected.append((index, errors))
    accepted = count - len(rejected) - len(retry)
    return Delivered(accepted=accepted, rejected=tuple(rejected), retry=tuple(retry))


def classify(answer: Answer, count: int) -> Outcome:
    """The meaning of ``answer`` for a request of ``count`` events."""
    try:
        body: object = json.loads(answer.body) if answer.body else None
    except ValueError:
        body = None
    status = answer.status
    if 200 <= status < 300:
        return _per_event(body, count) or Delivered(accepted=count, rejected=(), retry=())
    if status == 400:
        per_event = _per_event(body, count)
        if per_event is not None:
            return per_event
        errors = _errors(body.get("errors")) if isinstance(body, dict) else ()
        return Refused(reason=error_name(answer), status=status, errors=errors)
    if status == 413:
        if count == 1:
            return Refused(reason=error_name(answer), status=status)
        limit = body.get("limit_bytes") if isinstance(body, dict) else None
        valid = isinstance(limit, int) and not isinstance(limit, bool) and limit > 0
        return Split(limit if valid else None)
    if status in (408, 429) or status >= 500:
        return Retry(after_secs=answer.retry_after_secs, reason=f"http_{status}")
    return Refused(reason=error_name(answer), status=status)
