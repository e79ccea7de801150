"""Lake upkeep: compact a closed day's small files, expire old partitions, delete leftovers.

Compaction merges the visible files of one hive directory into one file and
commits a manifest object that adds the merged file and removes its inputs,
so a reader sees either the old files or the new one, never both or neither.

Every ``store`` process runs this upkeep, so several may run at once, each
from its own view of the table. Compaction and retention therefore commit as
numbered changes (``manifest.commit_change``): a change is created only if
no other change came after the view it was checked against, and a
compaction is committed only if all its inputs are still visible then. A
compactor that loses reads the table again: if its inputs are still there it
commits under the next number, otherwise (another compaction took them, or
retention removed them) it deletes its merged file and gives up, so the lake
never shows a row twice and never brings back a removed file.

Merged files are named by the change number they are staged for
(``compact-<n>-<token>.parquet``). One that no manifest names while change
``n`` exists can never become visible (a compactor that died, or lost, before
deleting it): ``purge_removed`` deletes it. Removed files are deleted only
after ``grace_secs``, so a query that listed the old set just before can
still read it.
"""

from __future__ import annotations

import hashlib
import io
import logging
import re
import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pyarrow.parquet as pq

from convtrack.errors import StoreError
from convtrack.observe.metrics import Metrics
from convtrack.store.cold.base import ColdStore
from convtrack.store.cold.manifest import (
    DataFile,
    ManifestEntry,
    TableState,
    commit_change,
    not_visible,
    read_state,
)
from convtrack.store.cold.writer import parquet_bytes

log = logging.getLogger("convtrack.cold")

# Tries of one change against other writers' changes before this run gives up on it
# (the next run starts afresh): each lost try means another change was committed.
COMMIT_ATTEMPTS = 8
_COMPACT_FILE = re.compile(r"(?:^|/)compact-(\d{12})-[0-9a-f]+\.parquet$")


def utc_date(epoch_us: int, days_back: int = 0) -> str:
    moment = datetime.fromtimestamp(epoch_us / 1e6, tz=UTC) - timedelta(days=days_back)
    return moment.strftime("%Y-%m-%d")


@dataclass(frozen=True)
class Merge:
    """The files of one directory to merge, as one view of the table listed them."""

    directory: str
    partition_date: str
    inputs: tuple[str, ...]


@dataclass(frozen=True)
class Staged:
    """A merged file written for change number ``seq``, not committed yet."""

    merge: Merge
    seq: int
    entry: ManifestEntry

    @property
    def output(self) -> str:
        return self.entry.adds[0].path


class Compactor:
    """Compaction of one table in steps: plan, merge, stage, publish.

    ``compact`` runs them in order; tests drive two compactors step by step
    to interleave them deterministically.
    """

    def __init__(
        self, lake: ColdStore, table: str, *, now_us: int, metrics: Metrics | None = None
    ) -> None:
        self.lake = lake
        self.table = table
        self.now_us = now_us
        self.token = uuid.uuid4().hex[:12]  # names this compactor's files and commits
        self._metrics = metrics
        self.superseded = 0  # merges given up because their inputs were no longer visible

    def plan(self, *, closed_before: str, min_files: int = 2) -> list[Merge]:
        """One merge per directory of a closed day holding at least ``min_files`` files."""
        by_dir: defaultdict[str, list[DataFile]] = defaultdict(list)
        for data_file in read_state(self.lake, self.table).files.values():
            if data_file.partition_date < closed_before:
                by_dir[data_file.path.rsplit("/", 1)[0]].append(data_file)
        return [
            Merge(directory, files[0].partition_date, tuple(sorted(f.path for f in files)))
            for directory, files in sorted(by_dir.items())
            if len(files) >= min_files
        ]

    def merge(self, merge: Merge) -> pa.Table | None:
        """The rows of the inputs, in source order; None when an input is gone for good."""
        try:
            tables = [pq.read_table(io.BytesIO(self.lake.read(p))) for p in merge.inputs]
        except StoreError:
            if self._superseded(merge, read_state(self.lake, self.table)):
                return None  # removed and already deleted by another process
            raise
        merged = pa.concat_tables(tables)
        if "source_offset" in merged.column_names:
            merged = merged.sort_by(
                [("source_partition", "ascending"), ("source_offset", "ascending")]
            )
        return merged

    def stage(self, merge: Merge, data: bytes, rows: int) -> Staged | None:
        """Read the table again and write the merged file for the next change number.

        None, writing nothing, when an input is no longer visible: committing
        would show its rows twice (another compaction merged it) or bring
        back rows retention removed.
        """
        state = read_state(self.lake, self.table)
        if self._superseded(merge, state):
            return None
        seq = state.change_seq + 1
        output = f"{merge.directory}/compact-{seq:012d}-{self.token}.parquet"
        self.lake.put(output, data)
        entry = ManifestEntry(
            table=self.table,
            kind="compact",
            adds=[DataFile(path=output, rows=rows, partition_date=merge.partition_date)],
            removes=list(merge.inputs),
            created_at_us=self.now_us,
            writer=self.token,
        )
        return Staged(merge, seq, entry)

    def publish(self, staged: Staged) -> bool:
        """Commit a staged merge; False (its file deleted) when another change came first."""
        if commit_change(self.lake, staged.entry, staged.seq):
            log.info(
                "compacted",
                extra={
                    "table": self.table,
                    "directory": staged.merge.directory,
                    "files": len(staged.merge.inputs),
                    "change": staged.seq,
                },
            )
            return True
        self.lake.delete(staged.output)
        self._count("compaction_race_lost")
        return False

    def run(self, merge: Merge) -> bool:
        """Merge, then stage and publish until committed or superseded; True if committed."""
        merged = self.merge(merge)
        if merged is None:
            return False
        data = parquet_bytes(merged)
        for _ in range(COMMIT_ATTEMPTS):
            staged = self.stage(merge, data, merged.num_rows)
            if staged is None:
                return False
            if self.publish(staged):
                return True
        log.warning(
            "compaction_gave_up",
            extra={"table": self.table, "directory": merge.directory, "tries": COMMIT_ATTEMPTS},
        )
        return False

    def _superseded(self, merge: Merge, state: TableState) -> bool:
        gone = not_visible(state, list(merge.inputs))
        if not gone:
            return False
        self.superseded += 1
        self._count("compaction_superseded")
        log.info(
            "compaction_superseded",
            extra={"table": self.table, "directory": merge.directory, "gone": gone[:5]},
        )
        return True

    def _count(self, kind: str) -> None:
        if self._metrics is not None:
            self._metrics.errors.labels("cold", kind).inc()


def compact(
    lake: ColdStore,
    table: str,
    *,
    closed_before: str,
    now_us: int,
    min_files: int = 2,
    metrics: Metrics | None = None,
) -> int:
    """Merge the files of each directory whose date is before ``closed_before``; returns merges."""
    compactor = Compactor(lake, table, now_us=now_us, metrics=metrics)
    plans = compactor.plan(closed_before=closed_before, min_files=min_files)
    return sum(1 for merge in plans if compactor.run(merge))


def retention_entry(
    state: TableState, table: str, *, keep_from: str, now_us: int
) -> ManifestEntry | None:
    """The change that removes every visible file dated before ``keep_from``; None if none."""
    old = sorted(p for p, f in state.files.items() if f.partition_date < keep_from)
    if not old:
        return None
    digest = hashlib.sha256("\n".join(old).encode()).hexdigest()[:16]
    return ManifestEntry(
        table=table, kind="retention", removes=old, created_at_us=now_us, writer=digest
    )


def expire(lake: ColdStore, table: str, *, keep_from: str, now_us: int) -> int:
    """Remove (through a manifest) every file whose date is before ``keep_from``.

    Against the newest view: a change committed meanwhile (a compaction that
    merged old files into a new one) makes it read the table again and
    remove what is old in that view, so no old row outlives a retention run.
    """
    for _ in range(COMMIT_ATTEMPTS):
        state = read_state(lake, table)
        entry = retention_entry(state, table, keep_from=keep_from, now_us=now_us)
        if entry is None:
            return 0
        if commit_change(lake, entry, state.change_seq + 1):
            return len(entry.removes)
    log.warning("retention_gave_up", extra={"table": table, "tries": COMMIT_ATTEMPTS})
    return 0


def purge_removed(lake: ColdStore, table: str, *, now_us: int, grace_secs: float) -> int:
    """Delete files removed more than ``grace_secs`` ago, and merged files never committed.

    A merged file staged for change ``n`` that no manifest names, once change
    ``n`` exists, lost its race or belongs to a compactor that died: it can
    never become visible. One staged for a later number may be about to be
    committed, so it stays.
    """
    state = read_state(lake, table)
    cutoff = now_us - int(grace_secs * 1_000_000)
    existing = set(lake.list(table))
    gone = [p for p, when in state.removed.items() if when <= cutoff and p in existing]
    named = set(state.files) | set(state.removed)
    for path in sorted(existing - named):
        match = _COMPACT_FILE.search(path)
        if match is not None and int(match.group(1)) <= state.change_seq:
            gone.append(path)
    for path in gone:
        lake.delete(path)
    return len(gone)
