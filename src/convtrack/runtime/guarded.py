"""The collector's view of the hot store: reads fail fast while the monitor sees it down.

The HTTP API reads the hot store on the event loop that also serves ingest.
While the health monitor's last check found the hot store unreachable, a read
answers ``StoreUnavailable`` at once (the app turns it into 503 with
Retry-After) instead of waiting on a connect timeout and stalling every ingest
request behind it. The next successful check lets reads through again.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from convtrack.errors import StoreUnavailable
from convtrack.store.hot.base import (
    ApplyResult,
    ConversionStats,
    Effect,
    HotStore,
    LiveStats,
    SessionState,
    UserTouch,
)


class ReadGuardedHotStore(HotStore):
    """Delegates to ``inner``; ``down()`` returns why it is known down, or None."""

    def __init__(self, inner: HotStore, down: Callable[[], str | None]) -> None:
        self._inner = inner
        self._down = down

    def _guard(self) -> HotStore:
        reason = self._down()
        if reason is not None:
            raise StoreUnavailable(f"hot store unavailable: {reason}")
        return self._inner

    def apply(
        self,
        group: str,
        effects: Sequence[Effect],
        positions: Mapping[int, int],
        now_us: int,
        sessions: Sequence[SessionState] = (),
        touches: Sequence[UserTouch] = (),
    ) -> ApplyResult:
        return self._guard().apply(group, effects, positions, now_us, sessions, touches)

    def sessions(self, keys: Sequence[str]) -> dict[str, SessionState]:
        return self._guard().sessions(keys)

    def user_touches(self, keys: Sequence[str]) -> dict[str, UserTouch]:
        return self._guard().user_touches(keys)

    def breakdown(self, dimension: str, date: str) -> list[tuple[str, ConversionStats]]:
        return self._guard().breakdown(dimension, date)

    def positions(self, group: str) -> dict[int, int]:
        return self._guard().positions(group)

    def conversions(self, campaign_id: str | None, date: str) -> ConversionStats:
        return self._guard().conversions(campaign_id, date)

    def excluded(self, campaign_id: str | None, date: str) -> dict[str, int]:
        return self._guard().excluded(campaign_id, date)

    def campaign_totals(self, date: str) -> list[ConversionStats]:
        return self._guard().campaign_totals(date)

    def live(self, now_us: int, window_minutes: int, latency_minutes: int) -> LiveStats:
        return self._guard().live(now_us, window_minutes, latency_minutes)

    def expire(self, watermark_us: int, max_rows: int) -> int:
        return self._guard().expire(watermark_us, max_rows)

    def remembered(self) -> int:
        return self._guard().remembered()

    def close(self) -> None:
        return None  # the inner store belongs to the process's Backends
