"""The session step: open or refresh sessions, and attribute campaigns from touches.

An event with a ``session_id`` (else its ``user_id``) opens a session or,
if an unexpired one exists, refreshes it (sliding ``ttl``): ``session_valid``
is true for an event that joined a session an earlier event opened. Each
event's own campaign facts form a touch (utm_*, click ids, referrer); a
non-direct touch becomes the user's last touch for the ``lookback``. An event
with no campaign of its own takes the campaign of the user's last touch, and
its source and medium come from its own touch, else that last touch, else
``(direct)/(none)``.

Sessions are read once per batch and written with the batch's counters, so
a batch sees the sessions of the events before it, in log order. A touch
received after the event (logged first by a collector whose clock runs
ahead, or written by an earlier run of this same batch) never attributes it.

An entry the hot store has already applied (a batch retried after a failed
publish, or replayed after a crash) was enriched when it was counted, and the
stored sessions and touches already include it: its enrichment comes back
from the hot store with its verdict (process/recorded.py), so here it is only
worked out as a fallback, and it changes no session or touch, so that the new
entries after it see the state the first run left.
"""

from __future__ import annotations

from typing import Any

import msgspec

from convtrack.model.event import Envelope
from convtrack.process.base import Attributed, Batch, Step
from convtrack.process.enrich.touch import Touch, touch_from
from convtrack.store.hot.base import HotStore, SessionState, UserTouch

DIRECT = ("(direct)", "(none)")
_TOUCH_CACHE = 50_000


# The touch cache's key: the facts a touch is made of, as canonical JSON (keys sorted),
# in one call instead of freezing each nested object in Python.
_touch_key = msgspec.json.Encoder(order="sorted").encode


def session_key(envelope: Envelope) -> str:
    if envelope.session_id:
        return f"{envelope.source}\x00s\x00{envelope.session_id}"
    return f"{envelope.source}\x00u\x00{envelope.user_id}"


def user_key(envelope: Envelope) -> str:
    return f"{envelope.source}\x00{envelope.user_id or envelope.session_id}"


class SessionStep(Step):
    stage = "sessions"

    def __init__(
        self,
        hot: HotStore,
        ttl_secs: int,
        lookback_secs: int,
        next_step: Step | None = None,
        group: str = "processor",
    ) -> None:
        """``group``: the hot-store consumer group the commit step applies with."""
        super().__init__(next_step)
        self._hot = hot
        self._group = group
        self._ttl_us = ttl_secs * 1_000_000
        self._lookback_us = lookback_secs * 1_000_000
        self._touches: dict[bytes, tuple[Touch, dict[str, Any]]] = {}

    def _touch(self, envelope: Envelope) -> tuple[Touch, dict[str, Any]]:
        """The event's touch; the same context and click ids give the same touch, so the
        result is kept and only its time changes (fbc keeps the first time seen, which
        is when that click's cookie would have been made)."""
        context = envelope.context
        key = _touch_key(
            (
                context.get("page_url"),
                context.get("referrer"),
                context.get("campaign"),
                context.get("click_ids"),
                envelope.click_ids,
            )
        )
        cached = self._touches.get(key)
        if cached is None:
            touch = touch_from(context, envelope.click_ids, envelope.event_time_us)
            cached = (touch, msgspec.to_builtins(touch))
            if len(self._touches) >= _TOUCH_CACHE:
                self._touches.clear()
            self._touches[key] = cached
        touch, facts = cached
        at = envelope.event_time_us
        if touch.at_us == at:
            return cached
        return msgspec.structs.replace(touch, at_us=at), {**facts, "at_us": at}

    def process(self, batch: Batch) -> None:
        items = [i for i in self.live_items(batch) if i.checked is not None]
        if not items:
            return
        envelopes = [i.checked.envelope for i in items if i.checked is not None]
        sessions = self._hot.sessions([session_key(e) for e in envelopes])
        touches = self._hot.user_touches([user_key(e) for e in envelopes])
        applied = self._hot.positions(self._group)
        written_sessions: dict[str, SessionState] = {}
        written_touches: dict[str, UserTouch] = {}
        for item, envelope in zip(items, envelopes, strict=True):
            item.attributed, state, touch = self._one(envelope, sessions, touches)
            if item.entry.offset < applied.get(item.entry.partition, 0):
                continue  # applied before: its state is in the store already (a fallback)
            sessions[state.key] = written_sessions[state.key] = state
            if touch is not None:
                touches[touch.key] = written_touches[touch.key] = touch
        batch.sessions = list(written_sessions.values())
        batch.touches = list(written_touches.values())

    def _one(
        self, envelope: Envelope, sessions: dict[str, SessionState], touches: dict[str, UserTouch]
    ) -> tuple[Attributed, SessionState, UserTouch | None]:
        """What the state before ``envelope`` says of it; its new session, and its touch if any."""
        at = envelope.received_at_us
        touch, facts = self._touch(envelope)
        own = None if touch.direct else facts

        skey = session_key(envelope)
        current = sessions.get(skey)
        if current is not None and current.expires_at_us > at >= current.opened_at_us:
            session_valid = True
            state = SessionState(
                key=skey,
                opened_at_us=current.opened_at_us,
                last_seen_us=at,
                expires_at_us=at + self._ttl_us,
                first_touch=current.first_touch,
                last_touch=own or current.last_touch,
            )
        else:
            session_valid = False
            state = SessionState(
                key=skey, opened_at_us=at, last_seen_us=at, expires_at_us=at + self._ttl_us,
                first_touch=facts, last_touch=own,
            )  # fmt: skip

        ukey = user_key(envelope)
        remembered = None
        if own is not None:
            remembered = UserTouch(
                key=ukey, touch=own, at_us=at, expires_at_us=at + self._lookback_us
            )
        previous = touches.get(ukey)
        attributed = own
        if (
            attributed is None
            and previous is not None
            and previous.at_us <= at < previous.expires_at_us
        ):
            attributed = previous.touch
        found = _attribution(envelope, None if own is None else touch, attributed, session_valid)
        return found, state, remembered


def _attribution(
    envelope: Envelope, own: Touch | None, attributed: dict[str, Any] | None, session_valid: bool
) -> Attributed:
    """The event's own touch (None: direct), and the campaign of the touch it is attributed to."""
    source, medium = DIRECT
    campaign_id = None
    click_ids: dict[str, str] = {}
    if attributed is not None:
        source = attributed.get("source") or DIRECT[0]
        medium = attributed.get("medium") or DIRECT[1]
        click_ids = dict(attributed.get("click_ids") or {})
        if envelope.campaign_id is None and attributed.get("campaign"):
            campaign_id = str(attributed["campaign"])
    return Attributed(
        session_valid=session_valid,
        campaign_source=source,
        campaign_medium=medium,
        campaign_id=campaign_id,
        touch_source=None if own is None else own.source,
        touch_medium=None if own is None else own.medium,
        touch_campaign=None if own is None else own.campaign or envelope.campaign_id,
        touch_click_ids=click_ids,
    )
