"""Event timestamps: RFC 3339 text or integer epoch milliseconds, to epoch microseconds."""

from __future__ import annotations

import re
from datetime import UTC, datetime

# Epoch milliseconds accepted as a number: 2000-01-01 to 2100-01-01.
_MIN_MS = 946_684_800_000
_MAX_MS = 4_102_444_800_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})", re.ASCII
)


def parse_timestamp_us(value: object) -> int | None:
    """Return epoch microseconds, or None when ``value`` is not a valid timestamp."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        if _MIN_MS <= value <= _MAX_MS:
            return value * 1000
        return None
    if isinstance(value, str):
        if _RFC3339.fullmatch(value) is None:
            return None
        try:
            parsed = datetime.fromisoformat(value.upper())
        except ValueError:
            return None
        if parsed.tzinfo is None or not 2000 <= parsed.year < 2100:
            return None
        delta = parsed - _EPOCH
        return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    return None


def format_us(epoch_us: int) -> str:
    """RFC 3339 UTC with milliseconds, e.g. ``2026-11-28T17:00:00.000Z``."""
    dt = datetime.fromtimestamp(epoch_us / 1_000_000, tz=UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"
