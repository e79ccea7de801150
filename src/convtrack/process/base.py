"""The processing port: steps chained with ``next_step``, ending in the commit step.

A batch of log entries flows through the chain; each step does its part and
hands the batch on. The last step makes every effect durable together with
the consumer positions, so a crash anywhere replays the batch and the
idempotent effects absorb it. Each step names its ``stage``; a step that
raises leaves that name in ``Batch.failed_stage``, so the runner can say where
a poison event failed (``STAGES``, in chain order). Steps run one batch at a time: the runner
polls the log only when the chain has finished the previous batch, so a
slow store holds events back in the log (backpressure) instead of in memory.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import msgspec

from convtrack import failpoints
from convtrack.log.base import LogEntry
from convtrack.model.event import Envelope
from convtrack.store.hot.base import SessionState, UserTouch

STAGES = ("check", "sessions", "enrich", "route", "publish", "hot_apply")


class Item(msgspec.Struct, kw_only=True):
    """One log entry on its way through the steps, with what the steps learned."""

    entry: LogEntry
    envelope: Envelope | None = None
    processed_at_us: int = 0
    campaign_id: str | None = None
    campaign_source: str | None = None
    campaign_medium: str | None = None
    touch_source: str | None = None  # the event's own campaign facts, None when direct
    touch_medium: str | None = None
    touch_campaign: str | None = None
    touch_click_ids: dict[str, str] = msgspec.field(default_factory=dict)
    device_type: str = "other"
    country_code: str = "ZZ"
    is_bot: bool = False
    session_valid: bool = False
    event_date: str = ""
    is_conversion: bool = False
    excluded: str = ""  # why it is not a conversion: "bot" or "not_a_conversion"
    token_id: str | None = None
    token_expires_at_us: int | None = None
    drop_reason: str | None = None


class Batch(msgspec.Struct, kw_only=True):
    items: list[Item]
    positions: dict[int, int]  # where the group resumes once this batch is committed
    sessions: list[SessionState] = msgspec.field(default_factory=list)  # to write with it
    touches: list[UserTouch] = msgspec.field(default_factory=list)
    failed_stage: str | None = None  # the stage that raised, when one did


class Step(ABC):
    """One processing step; passes the batch on to ``next_step`` (if any) when done."""

    stage = "process"

    def __init__(self, next_step: Step | None = None) -> None:
        self.next_step = next_step

    @abstractmethod
    def process(self, batch: Batch) -> None:
        """Do this step's part on ``batch`` (mutating its items)."""

    def submit(self, batch: Batch) -> None:
        try:
            self.process(batch)
            self.inject_faults(batch)
        except Exception:
            if batch.failed_stage is None:
                batch.failed_stage = self.stage
            raise
        if self.next_step is not None:
            self.next_step.submit(batch)

    def inject_faults(self, batch: Batch) -> None:
        """The faults a test armed for this stage (``convtrack.failpoints.poison``)."""
        armed = failpoints.poisoned(self.stage)
        if armed:
            for item in self.live_items(batch):
                if item.envelope is not None:
                    failpoints.check(self.stage, item.envelope.event_id, armed)

    def live_items(self, batch: Batch) -> Sequence[Item]:
        return [item for item in batch.items if item.drop_reason is None]
