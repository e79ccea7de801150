"""Lake upkeep: compact a closed day's small files, expire old partitions, delete leftovers.

Compaction merges the visible files of one hive directory into one file and
commits a manifest object that adds the merged file and removes its inputs,
so a reader sees either the old files or the new one, never both or neither.
Removed files are deleted only after ``grace_secs``, so a query that listed
the old set just before can still read it.
"""

from __future__ import annotations

import hashlib
import io
import logging
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pyarrow.parquet as pq

from convtrack.store.cold.lake import Lake
from convtrack.store.cold.manifest import DataFile, ManifestEntry, read_state, write_entry
from convtrack.store.cold.writer import parquet_bytes

log = logging.getLogger("convtrack.cold")


def utc_date(epoch_us: int, days_back: int = 0) -> str:
    moment = datetime.fromtimestamp(epoch_us / 1e6, tz=UTC) - timedelta(days=days_back)
    return moment.strftime("%Y-%m-%d")


def _read_table(lake: Lake, relative: str) -> pa.Table:
    return pq.read_table(io.BytesIO(lake.read(relative)))


def compact(lake: Lake, table: str, *, closed_before: str, now_us: int, min_files: int = 2) -> int:
    """Merge the files of each directory whose date is before ``closed_before``; returns merges."""
    state = read_state(lake, table)
    by_dir: defaultdict[str, list[DataFile]] = defaultdict(list)
    for data_file in state.files.values():
        if data_file.partition_date < closed_before:
            by_dir[data_file.path.rsplit("/", 1)[0]].append(data_file)
    merges = 0
    for directory, files in sorted(by_dir.items()):
        if len(files) < min_files:
            continue
        paths = sorted(f.path for f in files)
        digest = hashlib.sha256("\n".join(paths).encode()).hexdigest()[:16]
        merged = pa.concat_tables([_read_table(lake, p) for p in paths])
        if "source_offset" in merged.column_names:
            merged = merged.sort_by(
                [("source_partition", "ascending"), ("source_offset", "ascending")]
            )
        target = f"{directory}/compact-{digest}.parquet"
        lake.put(target, parquet_bytes(merged))
        entry = ManifestEntry(
            table=table,
            kind="compact",
            adds=[
                DataFile(path=target, rows=merged.num_rows, partition_date=files[0].partition_date)
            ],
            removes=paths,
            created_at_us=now_us,
        )
        write_entry(lake, entry, f"compact-{digest}")
        merges += 1
        log.info("compacted", extra={"table": table, "directory": directory, "files": len(paths)})
    return merges


def expire(lake: Lake, table: str, *, keep_from: str, now_us: int) -> int:
    """Remove (through a manifest) every file whose date is before ``keep_from``."""
    state = read_state(lake, table)
    old = sorted(p for p, f in state.files.items() if f.partition_date < keep_from)
    if old:
        digest = hashlib.sha256("\n".join(old).encode()).hexdigest()[:16]
        entry = ManifestEntry(table=table, kind="retention", removes=old, created_at_us=now_us)
        write_entry(lake, entry, f"retention-{digest}")
    return len(old)


def purge_removed(lake: Lake, table: str, *, now_us: int, grace_secs: float) -> int:
    """Delete files whose removal was committed more than ``grace_secs`` ago."""
    state = read_state(lake, table)
    cutoff = now_us - int(grace_secs * 1_000_000)
    existing = set(lake.list(table))
    gone = [p for p, when in state.removed.items() if when <= cutoff and p in existing]
    for path in gone:
        lake.delete(path)
    return len(gone)
