"""The Parquet schemas of the lake's tables, defined once (documented in docs/lake.md)."""

from __future__ import annotations

from typing import Any

import msgspec
import pyarrow as pa

from convtrack.model.processed import ProcessedEvent
from convtrack.store.rejects.base import StoredReject

UTC_US = pa.timestamp("us", tz="UTC")

EVENTS = pa.schema(
    [
        pa.field("event_id", pa.string(), nullable=False),
        pa.field("event_name", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("user_id", pa.string()),
        pa.field("session_id", pa.string()),
        pa.field("event_time", UTC_US, nullable=False),
        pa.field("received_at", UTC_US, nullable=False),
        pa.field("value", pa.int64()),
        pa.field("currency", pa.string()),
        pa.field("campaign_id", pa.string(), nullable=False),
        pa.field("campaign_source", pa.string()),
        pa.field("campaign_medium", pa.string()),
        pa.field("touch_source", pa.string()),
        pa.field("touch_medium", pa.string()),
        pa.field("touch_campaign", pa.string()),
        pa.field("device_type", pa.string(), nullable=False),
        pa.field("country_code", pa.string(), nullable=False),
        pa.field("is_bot", pa.bool_(), nullable=False),
        pa.field("session_valid", pa.bool_(), nullable=False),
        pa.field("is_conversion", pa.bool_(), nullable=False),
        pa.field("event_date", pa.string(), nullable=False),
        pa.field("properties", pa.string(), nullable=False),
        pa.field("context", pa.string(), nullable=False),
        pa.field("user", pa.string(), nullable=False),
        pa.field("click_ids", pa.string(), nullable=False),
        pa.field("consent", pa.string(), nullable=False),
        pa.field("extra", pa.string(), nullable=False),
        pa.field("event_id_derived", pa.bool_(), nullable=False),
        pa.field("key_role", pa.string(), nullable=False),
        pa.field("logged_at", UTC_US, nullable=False),
        pa.field("processed_at", UTC_US, nullable=False),
        pa.field("counted_at", UTC_US, nullable=False),
        pa.field("source_partition", pa.int32(), nullable=False),
        pa.field("source_offset", pa.int64(), nullable=False),
    ]
)

REJECTS = pa.schema(
    [
        pa.field("reject_id", pa.int64(), nullable=False),
        pa.field("received_at", UTC_US, nullable=False),
        pa.field("received_date", pa.string(), nullable=False),
        pa.field("route", pa.string(), nullable=False),
        pa.field("status", pa.int32(), nullable=False),
        pa.field("codes", pa.list_(pa.string()), nullable=False),
        pa.field("body", pa.string(), nullable=False),
        pa.field("source", pa.string()),
        pa.field("key_role", pa.string()),
        pa.field("key_id", pa.string()),
        pa.field("event_id", pa.string()),
        pa.field("batch_index", pa.int32()),
    ]
)

_json = msgspec.json.Encoder()


def _text(value: Any) -> str:
    return _json.encode(value).decode() if value else "{}"


def events_table(events: list[ProcessedEvent]) -> pa.Table:
    # Column by column: one comprehension per column is several times faster than
    # appending row by row, and this runs for every event that reaches the lake.
    env = [p.event for p in events]
    columns: dict[str, list[Any]] = {
        "event_id": [e.event_id for e in env],
        "event_name": [e.event_name for e in env],
        "source": [e.source for e in env],
        "user_id": [e.user_id for e in env],
        "session_id": [e.session_id for e in env],
        "event_time": [e.event_time_us for e in env],
        "received_at": [e.received_at_us for e in env],
        "value": [e.value for e in env],
        "currency": [e.currency for e in env],
        "campaign_id": [p.campaign_id for p in events],
        "campaign_source": [p.campaign_source for p in events],
        "campaign_medium": [p.campaign_medium for p in events],
        "touch_source": [p.touch_source for p in events],
        "touch_medium": [p.touch_medium for p in events],
        "touch_campaign": [p.touch_campaign for p in events],
        "device_type": [p.device_type for p in events],
        "country_code": [p.country_code for p in events],
        "is_bot": [p.is_bot for p in events],
        "session_valid": [p.session_valid for p in events],
        "is_conversion": [p.is_conversion for p in events],
        "event_date": [p.event_date for p in events],
        "properties": [_text(e.properties) for e in env],
        "context": [_text(e.context) for e in env],
        "user": [_text(e.user) for e in env],
        "click_ids": [_text(e.click_ids) for e in env],
        "consent": [_text(e.consent) for e in env],
        "extra": [_text(e.extra) for e in env],
        "event_id_derived": [e.event_id_derived for e in env],
        "key_role": [e.key_role for e in env],
        "logged_at": [p.logged_at_us for p in events],
        "processed_at": [p.processed_at_us for p in events],
        "counted_at": [p.counted_at_us for p in events],
        "source_partition": [p.source_partition for p in events],
        "source_offset": [p.source_offset for p in events],
    }
    return pa.Table.from_pydict(columns, schema=EVENTS)


def rejects_table(rejects: list[StoredReject]) -> pa.Table:
    columns: dict[str, list[Any]] = {name: [] for name in REJECTS.names}
    for r in rejects:
        row = (
            r.id, r.received_at_us, r.received_at[:10], r.route, r.status, r.codes, r.body,
            r.source, r.key_role, r.key_id, r.event_id, r.index,
        )  # fmt: skip
        for name, value in zip(REJECTS.names, row, strict=True):
            columns[name].append(value)
    return pa.Table.from_pydict(columns, schema=REJECTS)
