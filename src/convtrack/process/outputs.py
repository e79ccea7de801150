"""What the commit step makes of an event: its processed record and its hot-store effect.

Both are built from the stages' findings on the item: the check stage's
envelope and token, and the ``Decision`` the session, enrich and route stages
add up to (``convtrack.process.recorded``), which is also what the hot store
keeps for a replay.
"""

from __future__ import annotations

from convtrack.log.base import LogRecord
from convtrack.model.processed import ProcessedEvent, encode_processed
from convtrack.process.base import Item
from convtrack.process.recorded import Decision, decide, record
from convtrack.store.hot.base import Effect


def decision_of(item: Item) -> Decision:
    """What the session, enrich and route stages found about a live item."""
    attributed, enriched, routed = item.attributed, item.enriched, item.routed
    assert attributed is not None and enriched is not None and routed is not None
    return decide(attributed, enriched, routed)


def processed_record(item: Item, decision: Decision, counted_at_us: int) -> LogRecord:
    """The processed log's record of a new event (keyed as its log entry)."""
    entry, checked = item.entry, item.checked
    assert checked is not None
    event = ProcessedEvent(
        event=checked.envelope,
        source_partition=entry.partition,
        source_offset=entry.offset,
        campaign_id=decision.campaign_id,
        event_date=decision.event_date,
        is_conversion=decision.is_conversion,
        campaign_source=decision.campaign_source,
        campaign_medium=decision.campaign_medium,
        touch_source=decision.touch_source,
        touch_medium=decision.touch_medium,
        touch_campaign=decision.touch_campaign,
        touch_click_ids=decision.touch_click_ids,
        device_type=decision.device_type,
        country_code=decision.country_code,
        is_bot=decision.is_bot,
        session_valid=decision.session_valid,
        logged_at_us=entry.logged_at_us,
        processed_at_us=checked.processed_at_us,
        counted_at_us=counted_at_us,
    )
    return LogRecord(entry.key, encode_processed(event))


def effect(item: Item, decision: Decision) -> Effect:
    """What the event asks of the hot store, with its decision kept for a replay."""
    entry, checked, routed = item.entry, item.checked, item.routed
    assert checked is not None and routed is not None
    envelope, token = checked.envelope, checked.token
    return Effect(
        source=envelope.source,
        event_id=envelope.event_id,
        partition=entry.partition,
        offset=entry.offset,
        received_at_us=envelope.received_at_us,
        event_date=decision.event_date,
        campaign_id=decision.campaign_id,
        is_conversion=decision.is_conversion,
        excluded=routed.excluded,
        value=envelope.value,
        currency=envelope.currency,
        token_id=None if token is None else token.token_id,
        token_expires_at_us=None if token is None else token.expires_at_us,
        dimensions={
            "country_code": decision.country_code,
            "device_type": decision.device_type,
            "campaign_source": decision.campaign_source or "(direct)",
        },
        recorded=record(decision),
    )
