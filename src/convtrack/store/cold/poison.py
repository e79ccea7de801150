"""The lake writer's poison rows: one row that cannot be laid out must not stall the lake.

A row whose hive directory cannot be computed, or which the table's schema
cannot take (``to_table`` raises for a reason that is not a backend's, see
``errors.is_transient``), is found by bisecting its group and quarantined
(stage ``cold``, scope the table, its processed-log position) before the
flush's manifest is committed, so the chain moves past it only once it is
kept. The rest of the flush is written as usual.

Replay: rows of stage ``cold`` queued by ``convtrack quarantine replay`` are
written by the table's writer as a file of their own,
``<dir>/replay-<id>.parquet``, named by a manifest object ``replay-<id>``
created only if absent: a replay that crashed after it and runs again adds
nothing twice. A row that still cannot be laid out stays quarantined with the
new error.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import msgspec
import pyarrow as pa

from convtrack import failpoints
from convtrack.clock import Clock
from convtrack.errors import ConvtrackError, is_transient
from convtrack.observe.metrics import Metrics
from convtrack.store.cold.base import ColdStore
from convtrack.store.cold.manifest import DataFile, ManifestEntry, manifest_dir
from convtrack.store.cold.tables import Position, TableSource, Unreadable
from convtrack.store.quarantine.base import Quarantined, QuarantineRow, QuarantineStore, short_error

log = logging.getLogger("convtrack.cold")

STAGE = "cold"
REPLAY_BATCH = 200

Group = tuple[str, str]  # hive directory, partition date
Located = tuple[Position, Any]


def _event_id(row: Any) -> str | None:
    event = getattr(row, "event", None)
    found = getattr(event, "event_id", None) or getattr(row, "event_id", None)
    return found if isinstance(found, str) else None


def _payload(row: Any) -> bytes:
    if isinstance(row, Unreadable):
        return row.payload
    try:
        return msgspec.json.encode(row)
    except Exception:  # the row may be what is broken: keep what can be said of it
        return repr(row).encode()


class LakePoison:
    """Lays out one table's rows for a flush, quarantining those that cannot be."""

    def __init__(
        self,
        source: TableSource,
        quarantine: QuarantineStore | None,
        clock: Clock,
        metrics: Metrics,
        parquet: Callable[[pa.Table], bytes],
    ) -> None:
        self._source = source
        self._quarantine = quarantine
        self._clock = clock
        self._metrics = metrics
        self._parquet = parquet

    def _table(self, rows: Sequence[Any]) -> pa.Table:
        armed = failpoints.poisoned(STAGE)
        if armed:
            for row in rows:
                failpoints.check(STAGE, _event_id(row), armed)
        return self._source.to_table(rows)

    def _may_quarantine(self, exc: BaseException) -> bool:
        return self._quarantine is not None and not is_transient(exc)

    def groups(self, located: Sequence[Located]) -> dict[Group, pa.Table]:
        """Each hive directory's table of ``located`` rows; the rows that fail are kept in the
        quarantine first (raises if they cannot be, so nothing is committed past them)."""
        grouped: defaultdict[Group, list[Located]] = defaultdict(list)
        poison: list[tuple[Located, BaseException]] = []
        for position, row in located:
            try:
                if isinstance(row, Unreadable):
                    raise row.error
                grouped[self._source.directory(row)].append((position, row))
            except Exception as exc:
                if not self._may_quarantine(exc):
                    raise
                poison.append(((position, row), exc))
        tables: dict[Group, pa.Table] = {}
        for group, members in grouped.items():
            try:
                tables[group] = self._table([row for _, row in members])
                continue
            except Exception as exc:
                if not self._may_quarantine(exc):
                    raise
            good = self._bisect(members, poison)
            if good:
                tables[group] = self._table([row for _, row in good])
        self._put_aside(poison)
        return tables

    def _bisect(
        self, members: list[Located], poison: list[tuple[Located, BaseException]]
    ) -> list[Located]:
        if len(members) == 1:
            try:
                self._table([members[0][1]])
                return members
            except Exception as exc:
                if not self._may_quarantine(exc):
                    raise
                poison.append((members[0], exc))
                return []
        try:
            self._table([row for _, row in members])
            return members
        except Exception as exc:
            if not self._may_quarantine(exc):
                raise
        half = len(members) // 2
        return self._bisect(members[:half], poison) + self._bisect(members[half:], poison)

    def _put_aside(self, poison: list[tuple[Located, BaseException]]) -> None:
        if not poison:
            return
        assert self._quarantine is not None
        now = self._clock.now_us()
        rows = [
            Quarantined(
                stage=STAGE, scope=self._source.name, log="processed", partition=position[0],
                offset=position[1], key="", payload=_payload(row), event_id=_event_id(row),
                error=short_error(exc), at_us=now,
            )
            for (position, row), exc in poison
        ]  # fmt: skip
        new = self._quarantine.add(rows)
        self._metrics.quarantined.labels(STAGE).inc(new)
        for row in rows:
            extra = {"table": self._source.name, "event_id": row.event_id, "error": row.error}
            log.error("row_quarantined", extra=extra)

    # -- replay -------------------------------------------------------------------------

    def replay(self, lake: ColdStore, writer_id: str) -> int:
        """Write this table's queued quarantine rows as files of their own; returns how many."""
        if self._quarantine is None:
            return 0
        now = self._clock.now_us()
        claimed = self._quarantine.claim([STAGE], self._source.name, REPLAY_BATCH, now)
        done: list[int] = []
        for row in claimed:
            try:
                self._replay_one(lake, row, writer_id, now)
            except ConvtrackError:
                raise  # the lake or the store: the claim lapses and the row comes back
            except Exception as exc:
                if is_transient(exc):
                    raise
                self._quarantine.failed_again(row.id, short_error(exc), now)
                continue
            done.append(row.id)
        self._quarantine.remove(done)
        self._metrics.quarantine_replayed.labels(STAGE).inc(len(done))
        return len(done)

    def _replay_one(
        self, lake: ColdStore, quarantined: QuarantineRow, writer_id: str, now: int
    ) -> None:
        name = f"{manifest_dir(self._source.name)}/replay-{quarantined.id:012d}.json"
        if name in set(lake.list(manifest_dir(self._source.name))):
            return  # written by an earlier attempt whose removal was lost
        row = self._source.decode_row(quarantined.event.payload)
        directory, date = self._source.directory(row)
        path = f"{self._source.name}/{directory}/replay-{quarantined.id:012d}.parquet"
        lake.put(path, self._parquet(self._table([row])))
        entry = ManifestEntry(
            table=self._source.name, kind="replay",
            adds=[DataFile(path=path, rows=1, partition_date=date)],
            created_at_us=now, writer=writer_id,
        )  # fmt: skip
        lake.put_if_absent(name, msgspec.json.encode(entry))
