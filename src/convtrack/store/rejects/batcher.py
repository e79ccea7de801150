"""Many async callers' writes handed to one writer thread, written a batch at a time.

The collector keeps the rejects of each request from its event loop; one
network round trip per request would be a bug under a flood of bad input, so
the writer thread takes everything queued since its last write and writes it
in one call. A caller's ``submit`` returns once its items are written (or
raises what the write raised).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

from convtrack.errors import StoreUnavailable

Item = TypeVar("Item")

_Queued = tuple[list[Item], "concurrent.futures.Future[None]"]


class WriteBatcher(Generic[Item]):
    def __init__(
        self,
        name: str,
        write: Callable[[list[Item]], None],
        *,
        max_pending: int,
        max_batch: int,
    ) -> None:
        self._write = write
        self._max_pending = max_pending
        self._max_batch = max_batch
        self._queue: deque[_Queued[Item]] = deque()
        self._pending = 0
        self._closing = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name=f"{name}-writer", daemon=True)
        self._thread.start()

    async def submit(self, items: list[Item]) -> None:
        await asyncio.wrap_future(self._enqueue(items))

    def submit_blocking(self, items: list[Item]) -> None:
        self._enqueue(items).result()

    def _enqueue(self, items: list[Item]) -> concurrent.futures.Future[None]:
        future: concurrent.futures.Future[None] = concurrent.futures.Future()
        with self._cond:
            if self._closing:
                raise StoreUnavailable("the rejects store is closing")
            if self._pending + len(items) > self._max_pending:
                raise StoreUnavailable("too many rejects waiting to be written")
            self._pending += len(items)
            self._queue.append((items, future))
            self._cond.notify()
        return future

    def _take(self) -> list[_Queued[Item]] | None:
        with self._cond:
            while not self._queue and not self._closing:
                self._cond.wait()
            taken: list[_Queued[Item]] = []
            size = 0
            while self._queue and (not taken or size + len(self._queue[0][0]) <= self._max_batch):
                queued = self._queue.popleft()
                size += len(queued[0])
                taken.append(queued)
            return taken or None

    def _run(self) -> None:
        while (taken := self._take()) is not None:
            error: BaseException | None = None
            try:
                self._write([item for items, _ in taken for item in items])
            except Exception as exc:  # handed to the callers; the thread keeps writing
                error = exc
            with self._cond:
                self._pending -= sum(len(items) for items, _ in taken)
            for _, future in taken:
                if error is None:
                    future.set_result(None)
                else:
                    future.set_exception(error)

    def close(self) -> None:
        """Write everything queued, then stop the thread."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join()
