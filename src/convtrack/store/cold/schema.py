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
    return _json.encode(value).decode()


def events_table(events: list[ProcessedEvent]) -> pa.Table:
    columns: dict[str, list[Any]] = {name: [] for name in EVENTS.names}
    for p in events:
        e = p.event
        row = (
            e.event_id, e.event_name, e.source, e.user_id, e.session_id, e.event_time_us,
            e.received_at_us, e.value, e.currency, p.campaign_id, p.campaign_source,
            p.campaign_medium, p.device_type, p.country_code, p.is_bot, p.session_valid,
            p.is_conversion, p.event_date, _text(e.properties), _text(e.context), _text(e.user),
            _text(e.click_ids), _text(e.consent), _text(e.extra), e.event_id_derived, e.key_role,
            p.logged_at_us, p.processed_at_us, p.counted_at_us, p.source_partition,
            p.source_offset,
        )  # fmt: skip
        for name, value in zip(EVENTS.names, row, strict=True):
            columns[name].append(value)
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
