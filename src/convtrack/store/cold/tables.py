"""The lake's tables: where their rows come from and how they are laid out."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import msgspec
import pyarrow as pa

from convtrack.log.base import LogConsumer, next_positions
from convtrack.model.processed import decode_processed
from convtrack.store.cold import schema
from convtrack.store.rejects.base import RejectStore, StoredReject

Position = tuple[int, int]  # (source partition, offset)


def partition_segment(name: str, value: str) -> str:
    """A hive directory segment, ``name=value``, with the value URI-encoded."""
    return f"{name}={quote(value, safe='')}"


@dataclass(frozen=True)
class Unreadable:
    """A source entry that could not be decoded: the writer quarantines it (store/cold/poison)."""

    payload: bytes
    error: Exception


class TableSource(ABC):
    """Rows for one lake table, in source order, each with its source position."""

    name: str

    @abstractmethod
    def poll(self, max_rows: int, timeout_secs: float) -> list[tuple[Position, Any]]: ...

    @abstractmethod
    def seek(self, positions: Mapping[int, int]) -> None:
        """Continue after these positions (per partition, the next one to read)."""

    @abstractmethod
    def committed(self, positions: Mapping[int, int]) -> None:
        """Rows up to these positions are in the lake for good."""

    @abstractmethod
    def to_table(self, rows: Sequence[Any]) -> pa.Table: ...

    @abstractmethod
    def directory(self, row: Any) -> tuple[str, str]:
        """The row's hive directory under the table, and its partition date."""

    def source_position(self, row: Any) -> Position | None:
        """The position of the event a row copies, when the source may hold copies.

        Rows of the processed log name their source event; the writer keeps
        only the first copy of each (log/published.py). None: every row
        is distinct.
        """
        return None

    @abstractmethod
    def decode_row(self, payload: bytes) -> Any:
        """A row from what the quarantine kept of it (its JSON)."""

    def close(self) -> None:
        return None


class EventsSource(TableSource):
    """Processed events, from the processed log, under ``event_date=/campaign_id=``."""

    name = "events"

    def __init__(self, consumer: LogConsumer) -> None:
        self._consumer = consumer

    def poll(self, max_rows: int, timeout_secs: float) -> list[tuple[Position, Any]]:
        entries = self._consumer.poll(max_rows, timeout_secs)
        return [((e.partition, e.offset), self._decoded(e.payload)) for e in entries]

    @staticmethod
    def _decoded(payload: bytes) -> Any:
        try:
            return decode_processed(payload)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            return Unreadable(payload, exc)

    def decode_row(self, payload: bytes) -> Any:
        return decode_processed(payload)

    def seek(self, positions: Mapping[int, int]) -> None:
        self._consumer.seek(positions)

    def committed(self, positions: Mapping[int, int]) -> None:
        # The manifest is where the lake's progress lives; this only saves a re-read.
        self._consumer.commit(positions, wait=False)

    def to_table(self, rows: Sequence[Any]) -> pa.Table:
        return schema.events_table(list(rows))

    def directory(self, row: Any) -> tuple[str, str]:
        date = row.event_date
        return (
            f"{partition_segment('event_date', date)}/"
            f"{partition_segment('campaign_id', row.campaign_id)}",
            date,
        )

    def source_position(self, row: Any) -> Position | None:
        if isinstance(row, Unreadable):
            return None  # kept in the range, so the writer quarantines it
        return (row.source_partition, row.source_offset)

    def close(self) -> None:
        self._consumer.close()


class RejectsSource(TableSource):
    """Rejected events, from the rejects store (by id), under ``received_date=``."""

    name = "rejects"

    def __init__(self, store: RejectStore) -> None:
        self._store = store
        self._after_id = 0

    def poll(self, max_rows: int, timeout_secs: float) -> list[tuple[Position, Any]]:
        rows = self._store.since(self._after_id, max_rows)
        if rows:
            self._after_id = rows[-1].id
        return [((0, r.id), r) for r in rows]

    def seek(self, positions: Mapping[int, int]) -> None:
        self._after_id = positions.get(0, 1) - 1

    def committed(self, positions: Mapping[int, int]) -> None:
        return None  # the manifest is the only record of how far the copy got

    def to_table(self, rows: Sequence[Any]) -> pa.Table:
        return schema.rejects_table(list(rows))

    def decode_row(self, payload: bytes) -> Any:
        return msgspec.json.decode(payload, type=StoredReject)

    def directory(self, row: Any) -> tuple[str, str]:
        date = row.received_at[:10]
        return partition_segment("received_date", date), date


__all__ = ["EventsSource", "RejectsSource", "TableSource", "Unreadable", "next_positions"]
