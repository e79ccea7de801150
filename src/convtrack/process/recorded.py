"""What the processor decided about a counted event, kept with its verdict for replays.

A batch is replayed after a failed publish or a crash between counting and
publishing. By then the hot store holds the sessions and touches the first
run wrote, so enriching the batch again would give other answers (a later
touch, a session the event itself opened) than the ones already counted.
The commit step therefore gathers each event's ``Decision`` from its stages'
findings, hands it to the hot store with the effect (as a blob), and builds
the processed event from it; the hot store keeps the blob with the verdict of
a counted copy and gives it back on a replay, and the commit step builds the
processed event from that one instead. The processed log (and so the lake and
the destinations) then says exactly what the counters counted.
"""

from __future__ import annotations

import msgspec

from convtrack.process.base import Attributed, Enriched, Routed


class Decision(msgspec.Struct, frozen=True, array_like=True):
    """The findings of the stages a replay could find differently, as one record.

    Stored in the hot store as an array, in this field order: append only.
    """

    campaign_id: str
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


def decide(attributed: Attributed, enriched: Enriched, routed: Routed) -> Decision:
    """The record of what the session, enrich and route stages found."""
    return Decision(
        campaign_id=enriched.campaign_id,
        campaign_source=attributed.campaign_source,
        campaign_medium=attributed.campaign_medium,
        touch_source=attributed.touch_source,
        touch_medium=attributed.touch_medium,
        touch_campaign=attributed.touch_campaign,
        touch_click_ids=attributed.touch_click_ids,
        device_type=enriched.device_type,
        country_code=enriched.country_code,
        is_bot=enriched.is_bot,
        session_valid=attributed.session_valid,
        event_date=enriched.event_date,
        is_conversion=routed.is_conversion,
    )


_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(Decision).decode


def record(decision: Decision) -> bytes:
    """The blob kept with the verdict."""
    return _encode(decision)


def restore(blob: bytes) -> Decision | None:
    """What the first run counted, from its blob; None for a bad blob."""
    try:
        return _decode(blob)
    except msgspec.DecodeError:
        return None
