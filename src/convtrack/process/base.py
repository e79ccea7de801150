"""The processing port: steps chained with ``next_step``, ending in the commit step.

A batch of log entries flows through the chain; each step does its part and
hands the batch on. The last step makes every effect durable together with
the consumer positions, so a crash anywhere replays the batch and the
idempotent effects absorb it. Each step names its ``stage``; a step that
raises leaves that name in ``Batch.failed_stage``, so the runner can say where
a poison event failed (``STAGES``, in chain order). Steps run one batch at a time: the runner
polls the log only when the chain has finished the previous batch, so a
slow store holds events back in the log (backpressure) instead of in memory.

Each stage leaves its finding on the ``Item`` as a struct of its own, which
the later stages read: ``Checked`` (check) → ``Attributed`` (sessions) →
``Enriched`` (enrich) → ``Routed`` (route); the commit step builds the
processed event and the hot store's effect from them
(``convtrack.process.outputs``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import msgspec

from convtrack import failpoints
from convtrack.log.base import LogEntry
from convtrack.model.event import Envelope
from convtrack.model.tokens import TokenClaims
from convtrack.store.hot.base import NO_CAMPAIGN, SessionState, UserTouch

STAGES = ("check", "sessions", "enrich", "route", "publish", "hot_apply")
# The processor's consumer group: its positions are the ones the hot store keeps.
GROUP = "processor"


class Checked(msgspec.Struct, frozen=True):
    """The check stage's finding: the entry's envelope, and its token's claims if it has one.

    Set whenever the entry decodes, so an event dropped for an unreadable token
    still names its event id and receive time.
    """

    envelope: Envelope
    processed_at_us: int  # when the processor took the entry
    token: TokenClaims | None = None


class Attributed(msgspec.Struct, frozen=True, kw_only=True):
    """The session stage's finding: the event's session, and the touch it is attributed to."""

    session_valid: bool  # it joined a session an earlier event opened
    campaign_source: str  # of the attributed touch, else "(direct)"
    campaign_medium: str
    campaign_id: str | None  # the attributed touch's, for an event that names none
    touch_source: str | None  # the event's own campaign facts, None when direct
    touch_medium: str | None
    touch_campaign: str | None
    touch_click_ids: dict[str, str]  # of the attributed touch (for ad platforms)


class Enriched(msgspec.Struct, kw_only=True):
    """The enrich stage's findings, written by the enrichers one after the other.

    Not frozen: each enricher sets its own fields on it, so one that fails
    leaves its fields at these unknowns and the others' findings stand.
    """

    campaign_id: str = NO_CAMPAIGN
    event_date: str = ""  # the UTC date the event is counted and stored under
    device_type: str = "other"
    country_code: str = "ZZ"
    is_bot: bool = False


class Routed(msgspec.Struct, frozen=True):
    """The route stage's verdict: counted as a conversion, or why not."""

    is_conversion: bool
    excluded: str  # "" for a conversion, else "bot" or "not_a_conversion"


# The only verdicts there are, shared by every event (none is allocated per event).
CONVERSION = Routed(True, "")
EXCLUDED_BOT = Routed(False, "bot")
NOT_A_CONVERSION = Routed(False, "not_a_conversion")


class Item(msgspec.Struct, kw_only=True):
    """One log entry on its way through the steps, with each stage's finding so far.

    The stages fill these in chain order (check, sessions, enrich, route); the
    commit step builds the processed event and the hot store's effect from them
    (``convtrack.process.outputs``). ``drop_reason`` set: no later stage sees it.
    """

    entry: LogEntry
    checked: Checked | None = None
    attributed: Attributed | None = None
    enriched: Enriched | None = None
    routed: Routed | None = None
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
                if item.checked is not None:
                    failpoints.check(self.stage, item.checked.envelope.event_id, armed)

    def live_items(self, batch: Batch) -> Sequence[Item]:
        return [item for item in batch.items if item.drop_reason is None]
