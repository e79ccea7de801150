"""``AsyncClient``: the same API on asyncio; ``await client.flush()``, ``await client.close()``."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import threading
from collections import deque
from collections.abc import Callable
from types import TracebackType

from convtrack_sdk import _stats
from convtrack_sdk._api import DEFAULT_ENDPOINT, MAX_BATCH_BYTES, Settings, TrackingApi
from convtrack_sdk._client import TOKEN_PATH, conversion_token_answer, conversion_token_request
from convtrack_sdk._deliver import Work, deliver_async, deliver_blocking, plan
from convtrack_sdk._events import QueuedEvent
from convtrack_sdk._http import HttpTransport
from convtrack_sdk._outcome import Rejection
from convtrack_sdk._retry import RetryPolicy

log = logging.getLogger("convtrack_sdk")


class AsyncClient(TrackingApi):
    """Like ``Client``, with a worker task on the running event loop instead of a
    thread. ``track`` stays a plain, non-blocking call; the network calls run in a
    worker thread (``asyncio.to_thread``), so the loop never waits on a socket.

    Use ``async with AsyncClient(...)`` or ``await client.close()``. Events still
    queued when the interpreter exits (the loop gone) are sent then, blocking.
    """

    def __init__(
        self,
        key: str,
        endpoint: str = DEFAULT_ENDPOINT,
        *,
        max_batch_size: int = 100,
        max_batch_bytes: int = MAX_BATCH_BYTES,
        flush_interval_secs: float = 0.5,
        max_queue_size: int = 10_000,
        timeout_secs: float = 10.0,
        retry: RetryPolicy | None = None,
        gzip: bool = False,
        client_id: str | None = None,
        on_reject: Callable[[Rejection], None] | None = None,
        exit_timeout_secs: float = 10.0,
    ) -> None:
        settings = Settings(
            max_batch_size=max_batch_size, max_batch_bytes=max_batch_bytes,
            flush_interval_secs=flush_interval_secs, max_queue_size=max_queue_size,
            timeout_secs=timeout_secs,
        )  # fmt: skip
        self._setup(
            settings, retry=retry or RetryPolicy(), client_id=client_id, on_reject=on_reject
        )
        self._transport = HttpTransport(endpoint, key, timeout_secs=timeout_secs, gzip_bodies=gzip)
        self._token_transport = HttpTransport(endpoint, key, timeout_secs=timeout_secs)
        self._token_lock = threading.Lock()
        self._exit_timeout = exit_timeout_secs
        self._queue: deque[QueuedEvent] = deque()
        self._work: Work = deque()  # the batch being sent
        self._wake = asyncio.Event()  # an event arrived, a flush asked, or closing
        self._settled = asyncio.Event()  # nothing queued or in flight
        self._settled.set()
        self._flushers = 0
        self._closed = False
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._full = False
        atexit.register(self._send_at_exit)

    def _queued(self) -> int:
        return len(self._queue) + sum(len(chunk) for chunk, _ in self._work)

    def _enqueue(self, event: QueuedEvent) -> None:
        if self._closed:
            self._counters.drop(_stats.CLOSED)
            log.warning("convtrack: event %s tracked after close()", event.event_id)
            return
        if len(self._queue) >= self._settings.max_queue_size:
            self._counters.drop(_stats.QUEUE_FULL)
            if not self._full:
                self._full = True
                log.warning(
                    "convtrack: queue full (%d events), dropping new ones", len(self._queue)
                )
            return
        self._full = False
        self._queue.append(event)
        self._settled.clear()
        self._ensure_worker()
        # Wake the worker for a first event (it starts the interval) or a full batch.
        if len(self._queue) in (1, self._settings.max_batch_size):
            self._wake.set()

    def _ensure_worker(self) -> None:
        """Start the worker on the running loop; without one, events wait in the queue
        for the next call made inside a loop (or for interpreter exit)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        if loop is not self._loop:
            # A new loop (another asyncio.run): the old worker is gone with its loop.
            # What it was sending goes again (safe: same event ids), on fresh events.
            self._queue.extendleft(reversed([e for chunk, _ in self._work for e in chunk]))
            self._work = deque()
            self._loop, self._task = loop, None
            self._wake, self._settled = asyncio.Event(), asyncio.Event()
            if self._queue:
                self._wake.set()
            else:
                self._settled.set()
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._run(), name="convtrack-sdk-worker")

    async def _take(self) -> list[QueuedEvent]:
        while not self._queue:
            self._wake.clear()
            await self._wake.wait()
        settings = self._settings
        if len(self._queue) < settings.max_batch_size and not self._flushers and not self._closed:
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), settings.flush_interval_secs)
        count = min(len(self._queue), settings.max_batch_size)
        return [self._queue.popleft() for _ in range(count)]

    async def _run(self) -> None:
        while True:
            batch = await self._take()
            self._work = plan(self._dispatcher, batch)
            try:
                await deliver_async(self._dispatcher, self._transport, self._work)
            except asyncio.CancelledError:
                raise
            except Exception:
                left = [e for chunk, _ in self._work for e in chunk]
                self._counters.drop(_stats.INTERNAL_ERROR, len(left))
                log.exception("convtrack: sending failed unexpectedly")
            self._work = deque()
            if not self._queue:
                self._settled.set()

    async def conversion_token(self, order_id: str) -> str:
        """A signed token for one order (server key); see ``Client.conversion_token``."""
        body = conversion_token_request(order_id)

        def call() -> str:
            with self._token_lock:
                return conversion_token_answer(self._token_transport.post_json(TOKEN_PATH, body))

        return await asyncio.to_thread(call)

    async def flush(self, timeout: float | None = None) -> bool:
        """Send everything queued now and wait until each event is settled; False when
        ``timeout`` seconds passed first."""
        if not self._queue and not self._work:
            return True
        self._ensure_worker()
        self._flushers += 1
        self._wake.set()
        try:
            await asyncio.wait_for(self._settled.wait(), timeout)
            return True
        except TimeoutError:
            return False
        finally:
            self._flushers -= 1

    async def close(self, timeout: float | None = 10.0) -> bool:
        """Flush up to ``timeout`` seconds, then stop; what is still unsent is dropped,
        counted as ``closed`` and logged. True when every event was settled in time."""
        self._closed = True
        atexit.unregister(self._send_at_exit)
        delivered = await self.flush(timeout)
        if self._task is not None and self._loop is asyncio.get_running_loop():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._dispatcher.abandon([e for chunk, _ in self._work for e in chunk] + list(self._queue))
        self._work = deque()
        self._queue.clear()
        self._settled.set()
        await asyncio.to_thread(self._transport.close)
        self._token_transport.close()
        return delivered

    def _send_at_exit(self) -> None:
        """At exit the loop is gone: send what is left with blocking calls."""
        self._closed = True
        left = [e for chunk, _ in self._work for e in chunk] + list(self._queue)
        self._work = deque()
        self._queue.clear()
        if left:
            stop = threading.Event()
            timer = threading.Timer(self._exit_timeout, stop.set)
            timer.start()
            try:
                deliver_blocking(self._dispatcher, self._transport, left, stop.wait, stop.is_set)
            finally:
                timer.cancel()
        self._transport.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()
