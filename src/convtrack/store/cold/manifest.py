"""The lake's manifest: which data files are visible.

Every change to a table is one small immutable JSON object under
``_manifest/<table>/``, written after the data files it names: a flush adds
the files holding one range of source positions; a compaction adds a merged
file and removes the files it replaces; retention removes old files.
Readers take ``union(adds) - union(removes)`` over all manifest objects, so
they see every change whole or not at all, and data files that no manifest
names (a flush that crashed before its manifest) are invisible.

Flushes of one source partition form a chain: each starts where the previous
one ended. Its manifest object is named by the partition and that start
(``flush-part-<p>-<first>``) and created only if the name is free, so when
several writers race to extend the chain from the same point, exactly one
range is committed and the others learn they lost (see ``commit_flush``).

Changes that remove files (compaction, retention) form one numbered chain per
table: ``change-<n>`` is created only if the name is free, by a writer that
read every change before it and checked that the files it removes are still
visible. Two such writers with different views of the table cannot both
commit: the second learns it lost, reads the table again and either commits
as number ``n + 1`` or gives up (see ``commit_change``). Flushes only add
files under names of their own, so they need no place in this chain.
"""

from __future__ import annotations

import msgspec

from convtrack.store.cold.base import ColdStore


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
    # The highest processed event's source offset read through ``last`` (see
    # log/published.py): where the next flush's first-copy filter starts.
    source_through: int | None = None
    writer: str = ""  # which writer committed it (for operators)


class TableState(msgspec.Struct):
    files: dict[str, DataFile]
    flushed_through: dict[int, int]  # per source partition, the last position flushed
    source_through: dict[int, int]  # per source partition, the filter state at that point
    removed: dict[str, int]  # path -> when its removal was committed (for deferred deletion)
    manifests: list[str]
    change_seq: int = 0  # the newest numbered change read (0: none); the next one is +1
    last_flush_at_us: int | None = None  # when the newest flush was committed (None: none yet)


def manifest_dir(table: str) -> str:
    return f"_manifest/{table}"


_decoder = msgspec.json.Decoder(ManifestEntry)


def flush_entry_name(table: str, partition: int, first: int) -> str:
    return f"{manifest_dir(table)}/flush-part-{partition}-{first:012d}.json"


def commit_flush(lake: ColdStore, entry: ManifestEntry) -> ManifestEntry:
    """Commit a flush unless its chain position is taken; returns the entry that holds it.

    The result is ``entry`` itself when this call committed it, or the entry
    another writer (or an earlier attempt of this one) committed at the same
    partition and first position.
    """
    assert entry.source_partition is not None and entry.first is not None
    name = flush_entry_name(entry.table, entry.source_partition, entry.first)
    if lake.put_if_absent(name, msgspec.json.encode(entry)):
        return entry
    return _decoder.decode(lake.read(name))


CHANGE_PREFIX = "change-"


def change_entry_name(table: str, seq: int) -> str:
    return f"{manifest_dir(table)}/{CHANGE_PREFIX}{seq:012d}.json"


def change_seq_of(name: str) -> int | None:
    """The number of a numbered change's manifest object; None for any other object."""
    base = name.rsplit("/", 1)[-1]
    if not (base.startswith(CHANGE_PREFIX) and base.endswith(".json")):
        return None
    digits = base[len(CHANGE_PREFIX) : -len(".json")]
    return int(digits) if digits.isdigit() else None


def commit_change(lake: ColdStore, entry: ManifestEntry, seq: int) -> bool:
    """Commit ``entry`` as change number ``seq``; False when another change holds it.

    The caller read the table with ``change_seq == seq - 1`` and checked
    ``entry`` against it, so a True answer means no change it did not see came
    between. A create whose answer was lost and is retried finds its own
    bytes under the name, which counts as committed (entries name files of
    their own, so two commits never have the same bytes by chance).
    """
    name = change_entry_name(entry.table, seq)
    data = msgspec.json.encode(entry)
    if lake.put_if_absent(name, data):
        return True
    return lake.read(name) == data


def not_visible(state: TableState, paths: list[str]) -> list[str]:
    """The paths that are not visible files of ``state`` (removed, or never committed)."""
    return [path for path in paths if path not in state.files]


def chain_head(lake: ColdStore, table: str, partition: int) -> ManifestEntry | None:
    """The newest flush of one source partition: one listing and one read.

    Flush names carry the zero-padded first position, so the greatest name of
    a partition is the end of its chain (older names, ``...-<first>-<last>``,
    sort the same way).
    """
    prefix = f"{manifest_dir(table)}/flush-part-{partition}-"
    names = [n for n in lake.list(manifest_dir(table)) if n.startswith(prefix)]
    return _decoder.decode(lake.read(max(names))) if names else None


def read_state(lake: ColdStore, table: str) -> TableState:
    adds: dict[str, DataFile] = {}
    removed: dict[str, int] = {}
    flushed: dict[int, int] = {}
    source_through: dict[int, int] = {}
    change_seq = 0
    last_flush: int | None = None
    names = lake.list(manifest_dir(table))
    for name in names:
        change_seq = max(change_seq, change_seq_of(name) or 0)
        entry = _decoder.decode(lake.read(name))
        for data_file in entry.adds:
            adds[data_file.path] = data_file
        for path in entry.removes:
            removed[path] = entry.created_at_us
        if entry.kind == "flush" and entry.source_partition is not None and entry.last is not None:
            last_flush = max(last_flush or 0, entry.created_at_us)
            partition = entry.source_partition
            if entry.last > flushed.get(partition, -1):
                flushed[partition] = entry.last
                if entry.source_through is not None:
                    source_through[partition] = entry.source_through
    visible = {path: f for path, f in adds.items() if path not in removed}
    return TableState(
        files=visible,
        flushed_through=flushed,
        source_through=source_through,
        removed=removed,
        manifests=names,
        change_seq=change_seq,
        last_flush_at_us=last_flush,
    )
