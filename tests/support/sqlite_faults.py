"""Real SQLite failures under an adapter's open connections, for the error-translation tests.

``locked`` holds a database's write lock from another connection (SQLITE_BUSY for a
writer whose busy timeout runs out); ``make_unreadable`` overwrites the database and
its WAL and shared-memory files, so the next statement of an open connection fails
with "file is not a database" (SQLITE_NOTADB).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """Within ``with``, another connection holds ``path``'s write lock."""
    blocker = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        blocker.execute("BEGIN EXCLUSIVE")
        yield
        blocker.execute("ROLLBACK")
    finally:
        blocker.close()


def make_unreadable(path: Path) -> None:
    """Overwrite ``path`` and its ``-wal`` and ``-shm`` files with bytes that are no database."""
    for name in (path.name, path.name + "-wal", path.name + "-shm"):
        part = path.with_name(name)
        if part.exists():
            size = max(part.stat().st_size, 4096)
            with part.open("r+b") as handle:
                handle.write(b"\xa5" * size)


def short_busy_timeout(conn: sqlite3.Connection) -> None:
    """Give up on a held lock after 50 ms (the adapters wait 10 s)."""
    conn.execute("PRAGMA busy_timeout=50")


@contextmanager
def injected_fault(path: Path, when: str) -> Iterator[None]:
    """Within ``with``, every write ``when`` names (``BEFORE INSERT ON t``, with an optional
    ``WHEN`` clause) aborts with "injected fault": a real SQLite error mid-transaction."""
    fault = sqlite3.connect(path)
    try:
        fault.execute(
            f"CREATE TRIGGER injected {when} BEGIN SELECT RAISE(ABORT, 'injected fault'); END"
        )
        fault.commit()
        yield
        fault.execute("DROP TRIGGER injected")
        fault.commit()
    finally:
        fault.close()
