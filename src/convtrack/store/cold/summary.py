"""What a lake table holds, from its manifest alone: rows, event dates, the last flush."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec

from convtrack.store.cold.manifest import TableState


class LakeSummary(msgspec.Struct, frozen=True, kw_only=True):
    rows: int
    first_date: str | None  # the oldest UTC event date with rows (None: no rows)
    last_date: str | None
    last_flush_at_us: int | None  # when the newest flush was committed (None: never)

    @classmethod
    def of(cls, state: TableState) -> LakeSummary:
        dates = sorted({f.partition_date for f in state.files.values() if f.rows})
        return cls(
            rows=sum(f.rows for f in state.files.values()),
            first_date=dates[0] if dates else None,
            last_date=dates[-1] if dates else None,
            last_flush_at_us=state.last_flush_at_us,
        )

    def as_json(self) -> dict[str, Any]:
        flushed = self.last_flush_at_us
        return {
            "rows": self.rows,
            "first_date": self.first_date,
            "last_date": self.last_date,
            "last_flush_at": None if flushed is None else rfc3339(flushed),
        }


def rfc3339(us: int) -> str:
    return (
        datetime.fromtimestamp(us / 1e6, tz=UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )
