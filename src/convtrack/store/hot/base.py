"""The hot-store port: dedup check-and-set, live counters and consumer positions, atomically.

``apply`` takes one batch of effects and the log positions that batch ends
at, and makes them durable together: an event already remembered (same
source and event_id within the window, or the same conversion token within
its lifetime) is a duplicate and changes no counter; every other event is
remembered, with the log position of the copy that counted, and, if it is a
conversion, counted. Because the positions move in the same step, a crash at
any instant either keeps the whole batch or none of it.

``apply`` is also idempotent: an effect below the group's committed position
was applied before; it changes nothing and gets the verdict it got then (new
exactly when the remembered position is its own). So the processor may
replay a batch whose later steps did not finish. A counted effect may carry a
``recorded`` blob (the processor's enrichment of it); a replay of it gets that
blob back, so the replay publishes exactly what the first run counted. Blobs
are kept only until a batch of the group starts past them on their partition
(the processor publishes everything below a batch's first offset before it
reads that batch), so they cost about one batch of space.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec

NO_CAMPAIGN = "(none)"

# Every stored total (a value sum, a count) is a signed 64-bit integer, the widest both
# stores add natively. A sum that would pass a bound stays at it (saturates) instead of
# failing the batch: one huge value must never stop counting. Each apply that capped a
# campaign's day total (per currency) adds one to ``value_overflows``.
TOTAL_MAX = 2**63 - 1
TOTAL_MIN = -(2**63)


def saturate(total: int) -> int:
    """``total`` held within the 64-bit bounds of a stored total."""
    return TOTAL_MAX if total > TOTAL_MAX else TOTAL_MIN if total < TOTAL_MIN else total


# Upper bounds, in milliseconds, of the end-to-end latency histogram kept per minute.
LATENCY_BOUNDS_MS = (
    1, 2, 3, 5, 7, 10, 15, 20, 30, 40, 50, 75, 100, 150, 200, 300, 500, 750,
    1000, 2000, 5000, 10_000, 30_000, 60_000, 300_000,
)  # fmt: skip


class Effect(msgspec.Struct, frozen=True, kw_only=True):
    """What one log entry asks of the hot store."""

    source: str
    event_id: str
    partition: int  # the log position of this copy
    offset: int
    received_at_us: int
    event_date: str  # the event's UTC date, YYYY-MM-DD
    campaign_id: str
    is_conversion: bool
    # Why a new event that is no conversion is not counted: one of EXCLUDED_REASONS
    # (not "duplicate", which the store decides), "" for a conversion.
    excluded: str = ""
    value: int | None = None
    currency: str | None = None
    token_id: str | None = None
    token_expires_at_us: int | None = None
    dimensions: dict[str, str] = msgspec.field(default_factory=dict)  # see DIMENSIONS
    recorded: bytes = b""  # kept with a counted copy's verdict, handed back on a replay


# Why an event of a campaign and day was not counted, as ``HotStore.excluded`` counts them:
# a bot's would-be conversion (``conversions.count_bots`` off), a duplicate (any event
# already remembered), an event whose name is not a conversion's (page_view, ...).
EXCLUDED_REASONS = ("bot", "duplicate", "not_a_conversion")

# The enriched dimensions conversions are also counted by (besides campaign and date).
DIMENSIONS = ("country_code", "device_type", "campaign_source")


class SessionState(msgspec.Struct, frozen=True, kw_only=True):
    """A visit: opened by an event, refreshed by later ones until it expires.

    Touches are the campaign facts of an event (source, medium, campaign,
    click ids, at_us), kept as plain data the store does not interpret.
    """

    key: str
    opened_at_us: int
    last_seen_us: int
    expires_at_us: int
    first_touch: dict[str, Any] | None = None
    last_touch: dict[str, Any] | None = None


class UserTouch(msgspec.Struct, frozen=True, kw_only=True):
    """A user's last non-direct touch, remembered for the attribution lookback."""

    key: str
    touch: dict[str, Any]
    at_us: int
    expires_at_us: int


class ApplyResult(msgspec.Struct, frozen=True):
    counted: list[bool]  # per effect: True when new (remembered, and counted if a conversion)
    duplicates: int
    latency_anomalies: int
    value_overflows: int = 0  # campaign day totals this apply capped at TOTAL_MAX/TOTAL_MIN
    # per replayed effect (by index) that counted the first time: its ``recorded`` blob
    recorded: dict[int, bytes] = msgspec.field(default_factory=dict)


class ConversionStats(msgspec.Struct, frozen=True):
    campaign_id: str | None
    date: str
    conversions: int
    value: dict[str, int]


class CampaignLive(msgspec.Struct, frozen=True):
    campaign_id: str
    conversions: int
    value: dict[str, int]


class LiveStats(msgspec.Struct, frozen=True, kw_only=True):
    window_minutes: int
    events: int
    conversions: int
    duplicates: int
    value: dict[str, int]
    campaigns: list[CampaignLive]
    latency_ms: dict[str, float | None]
    latency_samples: int
    duplicates_total: int
    latency_anomalies_total: int
    per_minute: list[dict[str, int | str]]
    value_overflows_total: int = 0  # all-time ApplyResult.value_overflows


class HotStore(ABC):
    @abstractmethod
    def apply(
        self,
        group: str,
        effects: Sequence[Effect],
        positions: Mapping[int, int],
        now_us: int,
        sessions: Sequence[SessionState] = (),
        touches: Sequence[UserTouch] = (),
    ) -> ApplyResult:
        """Dedupe, count and move ``group``'s positions, all or nothing.

        ``now_us`` is when the effects become visible: end-to-end latency is
        measured from each effect's ``received_at_us`` to it. ``sessions`` and
        ``touches`` (the batch's new session and attribution state) are written
        in the same transaction.
        """

    @abstractmethod
    def sessions(self, keys: Sequence[str]) -> dict[str, SessionState]:
        """The stored sessions among ``keys`` (expired ones may still be returned)."""

    @abstractmethod
    def user_touches(self, keys: Sequence[str]) -> dict[str, UserTouch]:
        """The remembered last touches among ``keys`` (expired ones may still be returned)."""

    @abstractmethod
    def breakdown(self, dimension: str, date: str) -> list[tuple[str, ConversionStats]]:
        """Conversions on one UTC date by a dimension value (one of DIMENSIONS)."""

    @abstractmethod
    def positions(self, group: str) -> dict[int, int]:
        """The positions committed by ``group``'s last ``apply``."""

    @abstractmethod
    def conversions(self, campaign_id: str | None, date: str) -> ConversionStats:
        """Counted conversions of one campaign (or all) on one UTC event date."""

    @abstractmethod
    def excluded(self, campaign_id: str | None, date: str) -> dict[str, int]:
        """Events of one campaign (or all) on one UTC event date that were not counted,
        by reason: every one of EXCLUDED_REASONS, 0 when none. A replay adds nothing."""

    @abstractmethod
    def campaign_totals(self, date: str) -> list[ConversionStats]:
        """Counted conversions per campaign on one UTC event date.

        One entry per campaign with at least one conversion that day, sorted by campaign_id.
        """

    @abstractmethod
    def live(self, now_us: int, window_minutes: int, latency_minutes: int) -> LiveStats:
        """Recent totals by minute of processing, per campaign, and latency percentiles."""

    @abstractmethod
    def expire(self, watermark_us: int, max_rows: int) -> int:
        """Forget dedup entries, tokens and minute buckets that ended before ``watermark_us``.

        Uses an index on expiry; removes at most ``max_rows`` per call.
        """

    @abstractmethod
    def remembered(self) -> int:
        """How many dedup entries (event ids and tokens) are remembered now."""

    @abstractmethod
    def close(self) -> None: ...
