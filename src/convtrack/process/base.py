"""The processing port: steps chained with ``next_step``, ending in the commit step.

A batch of log entries flows through the chain; each step does its work and
hands the batch on. The last step makes the effects durable and commits the
offsets, so a crash anywhere replays the batch and idempotent effects absorb it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import msgspec

from convtrack.log.base import LogEntry
from convtrack.model.event import Envelope


class Item(msgspec.Struct, kw_only=True):
    """One event on its way through the steps, with its log position and stage times."""

    entry: LogEntry
    envelope: Envelope | None
    processed_at_us: int = 0
    drop_reason: str | None = None


class Step(ABC):
    """One processing step. ``submit`` either passes the batch to ``next_step`` or ends it."""

    @abstractmethod
    def submit(self, batch: Sequence[Item]) -> None: ...

    @abstractmethod
    def close(self) -> None: ...
