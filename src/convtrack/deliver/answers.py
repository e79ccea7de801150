"""Reading platform answers, shared by every destination's ``response`` module (pure)."""

from __future__ import annotations

from typing import Any

import msgspec

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
