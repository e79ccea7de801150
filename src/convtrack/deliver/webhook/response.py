"""A webhook receiver's answer to a delivery outcome, pure."""

from __future__ import annotations

from convtrack.deliver.base import Delivered, Outcome, Reject, Retry

EXCERPT_CHARS = 500


def excerpt(body: bytes, limit: int = EXCERPT_CHARS) -> str:
    text = body.decode("utf-8", errors="replace")
    return text if len(text) <= limit else text[:limit] + "…"


def retry_after_secs(value: str | None) -> float | None:
    """``Retry-After`` in seconds (the HTTP-date form is not used by receivers we know)."""
    if value is None:
        return None
    try:
        secs = float(value.strip())
    except ValueError:
        return None
    return secs if secs >= 0 else None


def read_response(status: int, headers: dict[str, str], body: bytes) -> Outcome:
    if 200 <= status < 300:
        return Delivered()
    if status == 429:
        return Retry(after_secs=retry_after_secs(headers.get("retry-after")), reason="HTTP 429")
    if status >= 500:
        return Retry(after_secs=retry_after_secs(headers.get("retry-after")),
                     reason=f"HTTP {status}: {excerpt(body)}")  # fmt: skip
    return Reject(reason=f"HTTP {status}: {excerpt(body)}")
