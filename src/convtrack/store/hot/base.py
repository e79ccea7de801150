"""The hot-store port: dedup check-and-set, counters and consumer positions, atomically.

``apply`` takes a batch of counted effects and the positions to commit and
makes them all durable together, so a replayed batch neither loses nor
double-counts: an event already seen is skipped by the dedup check.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence

import msgspec


class Effect(msgspec.Struct, frozen=True, kw_only=True):
    source: str
    event_id: str
    campaign_id: str
    event_date: str
    value: int | None
    currency: str | None
    conversion_token: str | None
    counted: bool


class ApplyResult(msgspec.Struct, frozen=True):
    counted: int
    duplicates: int


class HotStore(ABC):
    @abstractmethod
    def apply(
        self, group: str, effects: Sequence[Effect], positions: Mapping[int, int]
    ) -> ApplyResult:
        """Dedupe and count ``effects`` and commit ``positions`` in one atomic step."""

    @abstractmethod
    def positions(self, group: str) -> dict[int, int]:
        """The positions committed with the last ``apply`` of ``group``."""

    @abstractmethod
    def close(self) -> None: ...
