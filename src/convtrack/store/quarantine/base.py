"""The quarantine port: events a stage failed on for good, kept with the error and the stage.

A stage whose batch fails for a reason that is not a backend's availability
(``convtrack.errors.is_transient``) looks for the events that fail it (the
processor bisects its batch) and quarantines each one: the log entry it read
(which log, partition, offset, raw payload), the error, the stage, when. The
rest of the batch proceeds, and the stage's position moves past a quarantined
event only once ``add`` has returned (the row is durable). A quarantined event
is neither counted nor dropped: ``convtrack quarantine list`` and
``GET /v1/quarantine`` show it, ``convtrack_quarantined_events_total{stage}``
counts it.

``add`` is idempotent on (stage, scope, log, partition, offset): a stage that
crashed before moving its position quarantines the same entry again, which
keeps one row. Replaying queues rows (``mark_replay``); the stage that owns
them claims them (``claim``: a lease, so two processes never both take a row,
and a claim whose process died is taken again after the lease), re-submits each
once and ``remove``s it, or keeps it with the new error (``failed_again``). A stage
whose re-submission is not safe to repeat (a destination that cannot deduplicate)
ends the claim for good before re-submitting (``settle_claims``: kept, unqueued,
with a note, so no lapsed lease sends it twice), and gives back what it did not
send (``give_back``).

The store lives with the rejects and dead letters: SQLite
(``DATA_DIR/quarantine/quarantine.db``) when ``hot.kind = "sqlite"``, Redis
when ``hot.kind = "redis"`` (shared by every process); ``runtime/backends.py``
picks one.
"""

from __future__ import annotations

import base64
from abc import ABC, abstractmethod
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

import msgspec

from convtrack.model.timeparse import format_us

# Every stage that quarantines: the processor's steps in chain order (process/base.py
# STAGES; "process" for a step without a name of its own), the lake writer, delivery.
QUARANTINE_STAGES = (
    "check", "sessions", "enrich", "route", "publish", "hot_apply", "process", "cold", "deliver",
)  # fmt: skip
MAX_CURSOR = 2**62

# Longer than one re-submission can take, so a live replay is never taken over.
CLAIM_LEASE_SECS = 300.0
ERROR_CHARS = 1000


def store_path(data_dir: Path) -> Path:
    return data_dir / "quarantine" / "quarantine.db"


class Quarantined(msgspec.Struct, frozen=True, kw_only=True):
    """One event a stage failed on: the log entry as read, and why."""

    stage: str  # check, sessions, enrich, route, hot_apply, publish, cold, deliver
    scope: str = ""  # the lake table (cold) or the destination (deliver); "" for the processor
    log: str  # the log the entry was read from: "events" or "processed"
    partition: int
    offset: int
    key: str
    payload: bytes
    event_id: str | None
    error: str
    at_us: int


class QuarantineRow(msgspec.Struct, frozen=True, kw_only=True):
    id: int
    event: Quarantined
    attempts: int  # how many times it failed (1, then one more per failed replay)
    replay: bool  # queued for replay, not settled yet

    def as_json(self) -> dict[str, Any]:
        e = self.event
        try:
            payload: Any = msgspec.json.decode(e.payload)
        except (msgspec.DecodeError, UnicodeDecodeError):
            payload = None
        return {
            "id": self.id,
            "stage": e.stage,
            "scope": e.scope or None,
            "event_id": e.event_id,
            "error": e.error,
            "log": e.log,
            "partition": e.partition,
            "offset": e.offset,
            "quarantined_at": format_us(e.at_us),
            "attempts": self.attempts,
            "replay_pending": self.replay,
            "payload": payload,
            # An entry that is not JSON (its decoding may be what failed) is shown raw.
            "payload_base64": None if payload is not None else base64.b64encode(e.payload).decode(),
        }


def short_error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:ERROR_CHARS]


def with_note(error: str, note: str | None) -> str:
    """The error a settled row shows: the note first (why it is not queued any more),
    the stage's error after it."""
    return error if not note else f"{note} (quarantined for: {error})"


class QuarantineStore(ABC):
    """Thread-safe; each call is atomic. Failures raise ``StoreError``."""

    @abstractmethod
    def add(self, events: Sequence[Quarantined]) -> int:
        """Keep ``events`` durably (one row per position); returns how many rows are new."""

    @abstractmethod
    def total(self, stage: str | None = None) -> int: ...

    @abstractmethod
    def items(
        self, stage: str | None = None, limit: int = 100, after_id: int = 0
    ) -> list[QuarantineRow]:
        """Oldest first, ids above ``after_id`` (the cursor of the previous page)."""

    @abstractmethod
    def mark_replay(self, stage: str | None = None) -> int:
        """Queue the rows (of one stage) for re-submission; returns how many were queued."""

    @abstractmethod
    def claim(
        self,
        stages: Collection[str],
        scope: str,
        limit: int,
        now_us: int,
        lease_secs: float = CLAIM_LEASE_SECS,
    ) -> list[QuarantineRow]:
        """Up to ``limit`` queued rows of ``stages`` and ``scope``, oldest first, not
        claimed (or whose claim lapsed): leased to the caller until ``now_us`` plus
        ``lease_secs``."""

    @abstractmethod
    def remove(self, ids: Sequence[int]) -> None:
        """The rows were re-submitted: they leave the quarantine."""

    @abstractmethod
    def settle_claims(self, ids: Sequence[int], note: str) -> list[int]:
        """End the claims on ``ids`` for good, before re-submitting them: the rows stay,
        unqueued (never claimed again until ``mark_replay`` queues them), their error
        prefixed with ``note`` until then. Returns the ids settled: those still queued
        (a row another process settled or removed meanwhile is not to be sent)."""

    @abstractmethod
    def give_back(self, ids: Sequence[int]) -> None:
        """Settled rows that were not re-submitted after all (a pause, a stop): queued
        again, claimable at once, with their error as before."""

    @abstractmethod
    def failed_again(self, row_id: int, error: str, now_us: int) -> None:
        """A replay failed again: keep the row, unqueued, with the new error."""

    @abstractmethod
    def close(self) -> None: ...
