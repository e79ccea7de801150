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
a batch sees the sessions of the events before it, in log order.
"""

from __future__ import annotations

import msgspec

from convtrack.model.event import Envelope
from convtrack.process.base import Batch, Item, Step
from convtrack.process.enrich.touch import touch_from
from convtrack.store.hot.base import HotStore, SessionState, UserTouch

DIRECT = ("(direct)", "(none)")


def session_key(envelope: Envelope) -> str:
    if envelope.session_id:
        return f"{envelope.source}\x00s\x00{envelope.session_id}"
    return f"{envelope.source}\x00u\x00{envelope.user_id}"


def user_key(envelope: Envelope) -> str:
    return f"{envelope.source}\x00{envelope.user_id or envelope.session_id}"


class SessionStep(Step):
    def __init__(
        self, hot: HotStore, ttl_secs: int, lookback_secs: int, next_step: Step | None = None
    ) -> None:
        super().__init__(next_step)
        self._hot = hot
        self._ttl_us = ttl_secs * 1_000_000
        self._lookback_us = lookback_secs * 1_000_000

    def process(self, batch: Batch) -> None:
        items = [i for i in self.live_items(batch) if i.envelope is not None]
        if not items:
            return
        envelopes = [i.envelope for i in items if i.envelope is not None]
        sessions = self._hot.sessions([session_key(e) for e in envelopes])
        touches = self._hot.user_touches([user_key(e) for e in envelopes])
        written_sessions: dict[str, SessionState] = {}
        written_touches: dict[str, UserTouch] = {}
        for item in items:
            self._one(item, sessions, touches, written_sessions, written_touches)
        batch.sessions = list(written_sessions.values())
        batch.touches = list(written_touches.values())

    def _one(
        self,
        item: Item,
        sessions: dict[str, SessionState],
        touches: dict[str, UserTouch],
        written_sessions: dict[str, SessionState],
        written_touches: dict[str, UserTouch],
    ) -> None:
        envelope = item.envelope
        assert envelope is not None
        at = envelope.received_at_us
        touch = touch_from(envelope.context, envelope.click_ids, envelope.event_time_us)
        facts = msgspec.to_builtins(touch)
        own = None if touch.direct else facts
        if own is not None:
            item.touch_source, item.touch_medium = touch.source, touch.medium
            item.touch_campaign = touch.campaign or envelope.campaign_id

        skey = session_key(envelope)
        current = sessions.get(skey)
        if current is not None and current.expires_at_us > at >= current.opened_at_us:
            item.session_valid = True
            state = SessionState(
                key=skey,
                opened_at_us=current.opened_at_us,
                last_seen_us=at,
                expires_at_us=at + self._ttl_us,
                first_touch=current.first_touch,
                last_touch=own or current.last_touch,
            )
        else:
            item.session_valid = False
            state = SessionState(
                key=skey, opened_at_us=at, last_seen_us=at, expires_at_us=at + self._ttl_us,
                first_touch=facts, last_touch=own,
            )  # fmt: skip
        sessions[skey] = written_sessions[skey] = state

        ukey = user_key(envelope)
        if own is not None:
            remembered = UserTouch(
                key=ukey, touch=own, at_us=at, expires_at_us=at + self._lookback_us
            )
            touches[ukey] = written_touches[ukey] = remembered
        previous = touches.get(ukey)
        attributed = own
        if attributed is None and previous is not None and previous.expires_at_us > at:
            attributed = previous.touch
        if attributed is None:
            item.campaign_source, item.campaign_medium = DIRECT
        else:
            item.campaign_source = attributed.get("source") or DIRECT[0]
            item.campaign_medium = attributed.get("medium") or DIRECT[1]
            if envelope.campaign_id is None and attributed.get("campaign"):
                item.campaign_id = str(attributed["campaign"])
