"""A processed event: an accepted, deduplicated, enriched event, as stored and forwarded."""

from __future__ import annotations

import msgspec

from convtrack.model.event import Envelope


class ProcessedEvent(msgspec.Struct, frozen=True, kw_only=True):
    """One event that was new (not a duplicate), with what the processor learned.

    ``source_partition`` and ``source_offset`` are the position of the copy
    in the event log that counted; downstream stages name their output by
    them, which makes their writes idempotent.
    """

    event: Envelope
    source_partition: int
    source_offset: int
    campaign_id: str
    event_date: str
    is_conversion: bool
    campaign_source: str | None = None
    campaign_medium: str | None = None
    touch_source: str | None = None
    touch_medium: str | None = None
    touch_campaign: str | None = None
    # The click ids of the touch the event is attributed to (for ad platforms).
    touch_click_ids: dict[str, str] = msgspec.field(default_factory=dict)
    device_type: str = "other"
    country_code: str = "ZZ"
    is_bot: bool = False
    session_valid: bool = False
    logged_at_us: int
    processed_at_us: int
    counted_at_us: int


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(ProcessedEvent)


def encode_processed(event: ProcessedEvent) -> bytes:
    return _encoder.encode(event)


def decode_processed(payload: bytes) -> ProcessedEvent:
    return _decoder.decode(payload)
