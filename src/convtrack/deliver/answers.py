"""Reading platform answers, shared by every destination's ``response`` module (pure)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgspec

from convtrack.deliver.base import Outcome, Retry, SetupFault, Throttled

EXCERPT_CHARS = 500


def excerpt(body: bytes, limit: int = EXCERPT_CHARS) -> str:
    """The start of an answer for dead letters and logs (platform answers hold no raw PII)."""
    text = body.decode("utf-8", errors="replace")
    return text if len(text) <= limit else text[:limit] + "…"


def retry_after_secs(value: str | None) -> float | None:
    """``Retry-After`` in seconds (the HTTP-date form is not used by the platforms we know)."""
    if value is None:
        return None
    try:
        secs = float(value.strip())
    except ValueError:
        return None
    return secs if secs >= 0 else None


def json_object(body: bytes) -> dict[str, Any] | None:
    """The answer as a JSON object, or None when it is not one (cut off, HTML, empty)."""
    try:
        value = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return None
    return value if isinstance(value, dict) else None


def redact(text: str, secrets: Iterable[str]) -> str:
    """The answer without our credentials, should a platform ever echo them."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[redacted]")
    return text


def by_status(status: int, after_secs: float | None, reason: str) -> Outcome | None:
    """The class of an error answer by its HTTP status alone, when the platform's own
    error code did not decide: 429 throttled, 5xx and 408 transient, 401/403 a setup
    error; None for the rest (each platform says what a 2xx or another 4xx means)."""
    if status == 429:
        return Throttled(after_secs=after_secs, reason=reason)
    if status >= 500 or status == 408:
        return Retry(after_secs=after_secs, reason=reason)
    if status in (401, 403):
        return SetupFault(reason=reason)
    return None
