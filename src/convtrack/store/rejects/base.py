"""The rejects port: every rejected event, with its raw body (contact fields hashed),
its codes, the key that sent it and the time, bounded by a size cap."""

from __future__ import annotations

from abc import ABC, abstractmethod

import msgspec


class IngestReject(msgspec.Struct, frozen=True, kw_only=True):
    """An event (or body) ingest refused, as it is kept: the store numbers it."""

    received_at_us: int
    route: str
    status: int
    codes: list[str]
    body: str
    source: str | None = None
    key_role: str | None = None
    key_id: str | None = None
    event_id: str | None = None
    index: int | None = None


class StoredReject(msgspec.Struct, frozen=True, kw_only=True):
    id: int
    received_at: str
    received_at_us: int
    route: str
    status: int
    codes: list[str]
    body: str
    source: str | None
    key_role: str | None
    key_id: str | None
    event_id: str | None
    index: int | None


class RejectPage(msgspec.Struct, frozen=True):
    total: int
    items: list[StoredReject]
    next_cursor: int | None


class RejectStore(ABC):
    @abstractmethod
    async def add(self, rejects: list[IngestReject]) -> None:
        """Keep ``rejects``; past the cap the oldest are dropped (and counted)."""

    @abstractmethod
    def page(self, *, code: str | None, limit: int, before_id: int | None) -> RejectPage:
        """Newest first; ``before_id`` is the cursor from the previous page."""

    @abstractmethod
    def since(self, after_id: int, limit: int) -> list[StoredReject]:
        """Oldest first, the rejects with an id above ``after_id`` (for the lake's copy)."""

    @property
    @abstractmethod
    def dropped(self) -> int:
        """How many rejects the size cap dropped: SQLite, by this process since start;
        Redis, by every collector sharing it (a shared counter)."""

    @abstractmethod
    def close(self) -> None: ...
