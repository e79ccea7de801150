"""The lake in a local directory: the os module only, no pyarrow file system.

A put is write-to-temp, fsync, rename, fsync the directory; a create-if-absent
links the synced temp file to its name, which fails if the name exists. The
os module is used directly so ``convtrack query`` does not pay for importing
pyarrow's file systems; DuckDB reads the Parquet files itself.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from convtrack.errors import StoreError
from convtrack.store.cold.base import TEMP_PREFIX, ColdStore

if TYPE_CHECKING:
    import duckdb
    import pyarrow as pa


class LocalColdStore(ColdStore):
    def __init__(self, directory: str | os.PathLike[str]) -> None:
        """The lake at ``directory``, made if missing."""
        path = Path(directory).resolve()
        path.mkdir(parents=True, exist_ok=True)
        self.root = str(path)
        self.uri = self.root

    def path(self, relative: str) -> str:
        return f"{self.root}/{relative}"

    def ensure_ready(self) -> None:
        """A directory is ready once made."""

    def put(self, relative: str, data: bytes) -> None:
        target = self.path(relative)
        try:
            _put(target, data)
        except OSError as exc:
            raise StoreError(f"cannot write {target}: {exc}") from exc

    def put_if_absent(self, relative: str, data: bytes) -> bool:
        target = self.path(relative)
        try:
            return _create(target, data)
        except OSError as exc:
            raise StoreError(f"cannot create {target}: {exc}") from exc

    def read(self, relative: str) -> bytes:
        try:
            return Path(self.path(relative)).read_bytes()
        except OSError as exc:
            raise StoreError(f"cannot read {relative}: {exc}") from exc

    def list(self, relative_dir: str) -> list[str]:
        found: list[str] = []
        for directory, _, names in os.walk(self.path(relative_dir)):
            for name in names:
                if not name.startswith(TEMP_PREFIX):
                    found.append(os.path.relpath(os.path.join(directory, name), self.root))
        return sorted(found)

    def delete(self, relative: str) -> None:
        try:
            os.unlink(self.path(relative))
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise StoreError(f"cannot delete {relative}: {exc}") from exc

    def create_view(
        self,
        con: duckdb.DuckDBPyConnection,
        view: str,
        files: Sequence[str],
        schema: Callable[[], pa.Schema],
    ) -> None:
        paths = ", ".join("'" + self.path(f).replace("'", "''") + "'" for f in files)
        con.execute(
            f"CREATE VIEW {view} AS SELECT * FROM read_parquet([{paths}],"
            " hive_partitioning = false)"
        )


def _write_temp(directory: str, data: bytes) -> str:
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, f"{TEMP_PREFIX}{uuid.uuid4().hex}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        os.unlink(tmp)
        raise
    return tmp


def _put(target: str, data: bytes) -> None:
    directory = os.path.dirname(target)
    tmp = _write_temp(directory, data)
    try:
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(directory)


def _create(target: str, data: bytes) -> bool:
    # link(2) fails with EEXIST when the name is taken, atomically, unlike a rename;
    # the temp file is complete and synced first, so the name never shows a partial file.
    directory = os.path.dirname(target)
    tmp = _write_temp(directory, data)
    try:
        os.link(tmp, target)
    except FileExistsError:
        return False
    finally:
        os.unlink(tmp)
    _fsync_dir(directory)
    return True


def _fsync_dir(directory: str) -> None:
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
