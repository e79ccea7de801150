"""The cold-store port: the lake's objects, named by paths relative to its root.

One small surface for the rest of the cold store (the table writers, the
manifest, compaction and retention, the poison rows, the DuckDB readers): put
a whole object atomically (readers never see a partial one), create one only
if its name is free (the manifest's commit point when several writers share a
lake), read, list and delete, and show DuckDB a set of Parquet files as a
view. A path is ``/``-separated and relative to the lake's root
(``events/event_date=2026-11-29/part-0-….parquet``, ``_manifest/events/…``).

Two implementations: ``LocalColdStore`` (a directory, ``store/cold/local.py``)
and ``S3ColdStore`` (a bucket and prefix, ``store/cold/s3.py``). Which one a
``cold.uri`` gets is decided in ``runtime/backends.py`` (``open_cold_store``);
``tests/support/contract/cold_contract.py`` holds both to this contract.
"""

from __future__ import annotations

import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import duckdb
    import pyarrow as pa

PROBE_DIR = "_probe"  # outside every table and the manifest: no reader lists it
PROBE_BYTES = b"\0" * 4096  # one file system block: a full disk refuses it
TEMP_PREFIX = ".tmp-"  # a name no listing returns: a local put's file before its rename


class ColdStore(ABC):
    """The lake. Every failure of the storage under it is a ``StoreError``."""

    uri: str  # where it is, for messages: the resolved directory, or ``s3://bucket/prefix``

    @abstractmethod
    def ensure_ready(self) -> None:
        """Check the lake can be used (an S3 bucket exists, created when allowed); once."""

    @abstractmethod
    def put(self, relative: str, data: bytes) -> None:
        """Store ``data`` at ``relative``, replacing any object of that name.

        Readers never see part of it: until it is complete the name is absent
        (or still holds the old object). The writers replace a file only by
        a replayed flush, with the same rows; on S3 a read racing a replace by
        different bytes may fail, as pyarrow reads by the size it first saw.
        """

    @abstractmethod
    def put_if_absent(self, relative: str, data: bytes) -> bool:
        """Create ``relative`` with ``data`` unless it exists; False when it already did.

        Atomic against every other writer of the lake, in any process: of two
        creates of one name, exactly one returns True, and readers see the
        whole object or nothing. An existing object is left as it was.
        """

    @abstractmethod
    def read(self, relative: str) -> bytes:
        """The whole object at ``relative``; a missing one is a ``StoreError``."""

    @abstractmethod
    def list(self, relative_dir: str) -> list[str]:
        """Every object under the directory ``relative_dir`` (recursive), as paths
        relative to the root, sorted; [] when there is none. ``""`` is the whole lake;
        ``events`` does not reach into ``events2/``."""

    @abstractmethod
    def delete(self, relative: str) -> None:
        """Remove the object at ``relative``; one already gone is no error."""

    @abstractmethod
    def create_view(
        self,
        con: duckdb.DuckDBPyConnection,
        view: str,
        files: Sequence[str],
        schema: Callable[[], pa.Schema],
    ) -> None:
        """Create view ``view`` in ``con`` over the Parquet ``files`` (at least one).

        ``schema`` gives the table's schema when the implementation needs it
        (a local lake lets DuckDB read the files' own, without importing pyarrow).
        """

    def probe(self) -> None:
        """Write a small object and delete it: raises StoreError while the lake takes no writes.

        For the cold store's health while it fails (store/cold/retry.py): a
        full disk or an unreachable bucket fails this as it fails a flush.
        """
        self.ensure_ready()
        name = f"{PROBE_DIR}/probe-{uuid.uuid4().hex}"
        self.put(name, PROBE_BYTES)
        self.delete(name)
