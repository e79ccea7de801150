"""What the Kafka log last saw of its cluster, and why it refuses appends (``status``).

The log's watchdog reads the topic's metadata every ``HEALTH_INTERVAL_SECS``;
while that fails, or a partition has no leader, appends are refused at once.
"""

from __future__ import annotations

import time
from typing import Final

HEALTH_INTERVAL_SECS: Final = 1.0
PROBE_TIMEOUT_SECS: Final = 2.0
# A failed delivery keeps status unwritable until a later one succeeds, or this long
# once the cluster answers again (readiness must not stay down with no traffic).
DELIVERY_ERROR_HOLD_SECS: Final = 3.0


class Health:
    __slots__ = ("checked_at", "detail", "reachable")

    def __init__(self, reachable: bool, detail: str, checked_at: float) -> None:
        self.reachable = reachable
        self.detail = detail
        self.checked_at = checked_at


def write_problem(
    *,
    closed: bool,
    fatal: str | None,
    health: Health,
    delivery_error: tuple[str, float] | None,
) -> str | None:
    """Why the log cannot take appends now, or None when it can."""
    if closed:
        return "closed"
    if fatal is not None:
        return f"the Kafka producer failed: {fatal}"
    if not health.reachable:
        return f"Kafka is unreachable: {health.detail}"
    if delivery_error is not None:
        error, at = delivery_error
        if time.monotonic() - at < DELIVERY_ERROR_HOLD_SECS or health.checked_at <= at:
            return f"the last delivery failed: {error}"
    return None
