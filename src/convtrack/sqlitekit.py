"""Shared SQLite machinery: connections with our pragmas, group commit, error translation.

Group commit: one writer thread owns the write connection. Callers hand it
work items; the thread takes every item waiting, runs them in one
transaction with one commit (one fsync in ``synchronous=FULL``), then wakes
each caller with its result. Under load many requests share a commit.

Every adapter on SQLite hands its callers our errors (``convtrack.errors``), not
``sqlite3.Error``: ``translated`` wraps a block, ``store_error`` names a store's.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Generic, TypeVar

from convtrack.errors import ConvtrackError, StoreError, StoreUnavailable, is_transient

Item = TypeVar("Item")
Result = TypeVar("Result")
# How an adapter says "cannot take the write now": (reason, retry after seconds) -> its error.
Unavailable = Callable[[str, int], ConvtrackError]
# How an adapter names a failed statement: (message, the sqlite3 error) -> its error.
Translate = Callable[[str, sqlite3.Error], ConvtrackError]


def store_error(message: str, exc: sqlite3.Error) -> StoreError:
    """A store's SQLite failure as ours: ``StoreUnavailable`` when the database cannot be
    used now (busy, locked, read-only, I/O, full), else ``StoreError``."""
    return StoreUnavailable(message) if is_transient(exc) else StoreError(message)


@contextlib.contextmanager
def translated(what: str, error: Translate = store_error) -> Iterator[None]:
    """Run the block; a ``sqlite3.Error`` leaves it as ``error(f"{what}: {exc}", exc)``,
    raised from it."""
    try:
        yield
    except sqlite3.Error as exc:
        raise error(f"{what}: {exc}", exc) from exc


def connect(path: Path, synchronous: str = "full", readonly: bool = False) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=10.0)
    conn.execute("PRAGMA busy_timeout=10000")
    if not readonly:
        conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={'FULL' if synchronous == 'full' else 'NORMAL'}")
    return conn


class _Pending(Generic[Item, Result]):
    __slots__ = ("future", "item", "loop", "size")

    def __init__(
        self,
        item: Item,
        size: int,
        loop: asyncio.AbstractEventLoop | None,
        future: asyncio.Future[Result] | concurrent.futures.Future[Result],
    ) -> None:
        self.item = item
        self.size = size
        self.loop = loop
        self.future = future


def _settle(pendings: list[_Pending[Item, Result]], results: list[Result] | BaseException) -> None:
    """Resolve the callers' futures (on their loop, or directly for blocking callers)."""
    for i, pending in enumerate(pendings):
        if pending.future.done():
            continue
        if isinstance(results, BaseException):
            pending.future.set_exception(results)
        else:
            pending.future.set_result(results[i])


class GroupCommitter(Generic[Item, Result]):
    """Runs ``write_batch(conn, items) -> results`` for many callers in one transaction.

    ``write_batch`` runs inside BEGIN IMMEDIATE ... COMMIT on the writer
    thread; its results are handed back only after COMMIT returned. A full queue,
    a closing committer and a failed write raise ``unavailable(reason, retry_after)``:
    the adapter's own error (the log's ``LogUnavailable``, a store's ``StoreUnavailable``).
    """

    def __init__(
        self,
        name: str,
        conn: sqlite3.Connection,
        write_batch: Callable[[sqlite3.Connection, Sequence[Item]], list[Result]],
        max_pending: int,
        max_batch: int,
        on_commit: Callable[[int, float], None] | None = None,
        *,
        unavailable: Unavailable,
    ) -> None:
        self._conn = conn
        self._unavailable = unavailable
        self._write_batch = write_batch
        self._max_pending = max_pending
        self._max_batch = max_batch
        self._on_commit = on_commit
        self._queue: deque[_Pending[Item, Result]] = deque()
        self._cond = threading.Condition()
        self._pending_size = 0
        self._closing = False
        self.last_error: str | None = None
        self._thread = threading.Thread(target=self._run, name=f"{name}-writer", daemon=True)
        self._thread.start()

    @property
    def pending(self) -> int:
        return self._pending_size

    async def submit(self, item: Item, size: int = 1) -> Result:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Result] = loop.create_future()
        self._enqueue(_Pending(item, size, loop, future))
        return await future

    def submit_blocking(self, item: Item, size: int = 1) -> Result:
        """The same for a caller on a plain thread: blocks until committed."""
        future: concurrent.futures.Future[Result] = concurrent.futures.Future()
        self._enqueue(_Pending(item, size, None, future))
        return future.result()

    def _enqueue(self, pending: _Pending[Item, Result]) -> None:
        with self._cond:
            if self._closing:
                raise self._unavailable("shutting down", 2)
            if self._pending_size + pending.size > self._max_pending:
                raise self._unavailable("too many pending writes", 1)
            self._pending_size += pending.size
            self._queue.append(pending)
            self._cond.notify()

    def _take(self) -> list[_Pending[Item, Result]] | None:
        with self._cond:
            while not self._queue and not self._closing:
                self._cond.wait()
            if not self._queue:
                return None
            taken: list[_Pending[Item, Result]] = []
            size = 0
            while self._queue and (not taken or size + self._queue[0].size <= self._max_batch):
                pending = self._queue.popleft()
                size += pending.size
                taken.append(pending)
            return taken

    def _run(self) -> None:
        while True:
            taken = self._take()
            if taken is None:
                return
            started = time.perf_counter()
            outcome: list[Result] | BaseException
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    outcome = self._write_batch(self._conn, [p.item for p in taken])
                    self._conn.execute("COMMIT")
                except BaseException:
                    if self._conn.in_transaction:
                        self._conn.execute("ROLLBACK")
                    raise
                self.last_error = None
            except sqlite3.Error as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                outcome = self._unavailable(f"write failed: {exc}", 1)
                outcome.__cause__ = exc  # as ``raise ... from exc`` would: it is raised later
            except Exception as exc:  # a bug must not kill the writer thread
                self.last_error = f"{type(exc).__name__}: {exc}"
                outcome = exc
            size = sum(p.size for p in taken)
            with self._cond:
                self._pending_size -= size
            if self._on_commit is not None and not isinstance(outcome, BaseException):
                self._on_commit(size, time.perf_counter() - started)
            by_loop: dict[asyncio.AbstractEventLoop | None, list[int]] = {}
            for i, pending in enumerate(taken):
                by_loop.setdefault(pending.loop, []).append(i)
            for loop, indexes in by_loop.items():
                group = [taken[i] for i in indexes]
                results = (
                    outcome if isinstance(outcome, BaseException) else [outcome[i] for i in indexes]
                )
                if loop is None:
                    _settle(group, results)
                    continue
                with contextlib.suppress(RuntimeError):  # the caller's loop is closed
                    loop.call_soon_threadsafe(_settle, group, results)

    def close(self) -> None:
        """Finish every queued item, then stop the thread."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join()
