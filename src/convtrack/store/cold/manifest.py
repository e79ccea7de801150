"""The lake's manifest: which data files are visible.

Every change to a table is one small immutable JSON object under
``_manifest/<table>/``, written after the data files it names: a flush adds
the files holding one range of source positions; a compaction adds a merged
file and removes the files it replaces; retention removes old files.
Readers take ``union(adds) - union(removes)`` over all manifest objects, so
they see every change whole or not at all, and data files that no manifest
names (a flush that crashed before its manifest) are invisible.
"""

from __future__ import annotations

import msgspec

from convtrack.store.cold.lake import Lake


class DataFile(msgspec.Struct, frozen=True):
    path: str
    rows: int
    partition_date: str


class ManifestEntry(msgspec.Struct, frozen=True, kw_only=True):
    table: str
    kind: str  # "flush", "compact" or "retention"
    source_partition: int | None = None
    first: int | None = None  # the source positions a flush holds, inclusive
    last: int | None = None
    adds: list[DataFile] = msgspec.field(default_factory=list)
    removes: list[str] = msgspec.field(default_factory=list)
    created_at_us: int


class TableState(msgspec.Struct):
    files: dict[str, DataFile]
    flushed_through: dict[int, int]  # per source partition, the last position flushed
    removed: dict[str, int]  # path -> when its removal was committed (for deferred deletion)
    manifests: list[str]


def manifest_dir(table: str) -> str:
    return f"_manifest/{table}"


def write_entry(lake: Lake, entry: ManifestEntry, name: str) -> None:
    lake.put(f"{manifest_dir(entry.table)}/{name}.json", msgspec.json.encode(entry))


def read_state(lake: Lake, table: str) -> TableState:
    adds: dict[str, DataFile] = {}
    removed: dict[str, int] = {}
    flushed: dict[int, int] = {}
    names = lake.list(manifest_dir(table))
    decoder = msgspec.json.Decoder(ManifestEntry)
    for name in names:
        entry = decoder.decode(lake.read(name))
        for data_file in entry.adds:
            adds[data_file.path] = data_file
        for path in entry.removes:
            removed[path] = entry.created_at_us
        if entry.kind == "flush" and entry.source_partition is not None and entry.last is not None:
            partition = entry.source_partition
            flushed[partition] = max(flushed.get(partition, -1), entry.last)
    visible = {path: f for path, f in adds.items() if path not in removed}
    return TableState(files=visible, flushed_through=flushed, removed=removed, manifests=names)
