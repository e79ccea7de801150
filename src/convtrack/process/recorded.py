"""What the processor decided about a counted event, kept with its verdict for replays.

A batch is replayed after a failed publish or a crash between counting and
publishing. By then the hot store holds the sessions and touches the first
run wrote, so enriching the batch again would give other answers (a later
touch, a session the event itself opened) than the ones already counted.
The commit step therefore hands each effect its enrichment as a blob; the
hot store keeps it with the verdict of a counted copy and gives it back on a
replay, and the commit step restores it before publishing. The processed log
(and so the lake and the destinations) then says exactly what the counters
counted.
"""

from __future__ import annotations

import msgspec

from convtrack.process.base import Item


class Enrichment(msgspec.Struct, frozen=True, array_like=True):
    """The fields of an Item that the steps derive (and a replay could derive differently)."""

    campaign_id: str | None
    campaign_source: str | None
    campaign_medium: str | None
    touch_source: str | None
    touch_medium: str | None
    touch_campaign: str | None
    touch_click_ids: dict[str, str]
    device_type: str
    country_code: str
    is_bot: bool
    session_valid: bool
    event_date: str
    is_conversion: bool


_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(Enrichment).decode


def record(item: Item) -> bytes:
    """The blob kept with ``item``'s verdict."""
    return _encode(
        Enrichment(
            campaign_id=item.campaign_id,
            campaign_source=item.campaign_source,
            campaign_medium=item.campaign_medium,
            touch_source=item.touch_source,
            touch_medium=item.touch_medium,
            touch_campaign=item.touch_campaign,
            touch_click_ids=item.touch_click_ids,
            device_type=item.device_type,
            country_code=item.country_code,
            is_bot=item.is_bot,
            session_valid=item.session_valid,
            event_date=item.event_date,
            is_conversion=item.is_conversion,
        )
    )


def restore(item: Item, blob: bytes) -> bool:
    """Set ``item``'s derived fields to what the first run counted; False for a bad blob."""
    try:
        found = _decode(blob)
    except msgspec.DecodeError:
        return False
    for name in Enrichment.__struct_fields__:
        setattr(item, name, getattr(found, name))
    return True
