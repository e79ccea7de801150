"""Live-view arithmetic every hot-store backend shares: latency buckets, percentiles,
per-minute rows. Pure."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from convtrack.store.hot.base import LATENCY_BOUNDS_MS

# A stage-to-stage time above this is counted as a latency anomaly.
ANOMALY_US = 5_000_000


def latency_bucket(latency_us: int) -> int:
    return bisect_left(LATENCY_BOUNDS_MS, latency_us / 1000)


def percentile_ms(histogram: Mapping[int, int], q: float) -> float | None:
    total = sum(histogram.values())
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for bucket in sorted(histogram):
        seen += histogram[bucket]
        if seen >= rank:
            return float(LATENCY_BOUNDS_MS[min(bucket, len(LATENCY_BOUNDS_MS) - 1)])
    return float(LATENCY_BOUNDS_MS[-1])


def minute_rows(per_minute: Mapping[int, Sequence[int]]) -> list[dict[str, int | str]]:
    """Per-minute (events, conversions, duplicates), oldest first, as the live view shows them."""
    return [
        {
            "minute": datetime.fromtimestamp(m * 60, tz=UTC).strftime("%Y-%m-%dT%H:%MZ"),
            "events": v[0],
            "conversions": v[1],
            "duplicates": v[2],
        }
        for m, v in sorted(per_minute.items())
    ]
