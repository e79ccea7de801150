"""``Client``: a bounded queue drained by one background thread."""

from __future__ import annotations

import atexit
import json
import logging
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from types import TracebackType

from convtrack_sdk import _stats
from convtrack_sdk._api import (
    DEFAULT_ENDPOINT,
    MAX_BATCH_BYTES,
    Settings,
    TrackingApi,
)
from convtrack_sdk._deliver import deliver_blocking
from convtrack_sdk._errors import ApiError
from convtrack_sdk._events import QueuedEvent
from convtrack_sdk._http import HttpTransport
from convtrack_sdk._outcome import Rejection
from convtrack_sdk._retry import RetryPolicy

log = logging.getLogger("convtrack_sdk")
TOKEN_PATH = "/v1/conversion-tokens"


def conversion_token_request(order_id: str) -> bytes:
    if not isinstance(order_id, str) or not order_id:
        raise ValueError("order_id must be a non-empty string")
    return json.dumps({"order_id": order_id}).encode()


def conversion_token_answer(body: object) -> str:
    if isinstance(body, dict) and isinstance(body.get("conversion_token"), str):
        return str(body["conversion_token"])
    raise ApiError(200, "not_a_token", json.dumps(body)[:200])


class Client(TrackingApi):
    """Sends events to ``endpoint`` in batches from a background thread.

    ``track``, ``identify`` and ``page`` never block: a full queue drops the event
    and counts it (``stats.dropped["queue_full"]``). A batch goes when it has
    ``max_batch_size`` events or ``flush_interval_secs`` after its first event.
    ``close()`` runs at interpreter exit too.
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
        self._new_transport: Callable[[], HttpTransport] = lambda: HttpTransport(
            endpoint, key, timeout_secs=timeout_secs, gzip_bodies=gzip
        )
        self._transport = self._new_transport()  # the worker's
        self._token_transport = self._new_transport()
        self._exit_timeout = exit_timeout_secs
        self._reset_state()
        atexit.register(self._close_at_exit)
        os.register_at_fork(after_in_child=_after_fork(weakref.ref(self)))

    def _reset_state(self) -> None:
        self._cond = threading.Condition()
        self._token_lock = threading.Lock()
        self._queue: deque[QueuedEvent] = deque()
        self._pending = 0  # queued or in flight, not yet settled
        self._flushers = 0  # callers waiting in flush(): send without waiting to fill
        self._closed = False  # no new events
        self._stopping = False  # the worker exits once the queue is empty
        self._abort = threading.Event()  # give up now: drop what is unsent
        self._worker: threading.Thread | None = None
        self._full = False  # in a stretch of queue-full drops (logged once per stretch)

    # -- the caller's side ---------------------------------------------------------------

    def _queued(self) -> int:
        with self._cond:
            return self._pending

    def _enqueue(self, event: QueuedEvent) -> None:
        with self._cond:
            if self._closed:
                self._counters.drop(_stats.CLOSED)
                log.warning("convtrack: event %s tracked after close()", event.event_id)
                return
            if len(self._queue) >= self._settings.max_queue_size:
                self._counters.drop(_stats.QUEUE_FULL)
                if not self._full:
                    self._full = True
                    log.warning(
                        "convtrack: queue full (%d events), dropping new events",
                        len(self._queue), extra={"max_queue_size": len(self._queue)},
                    )  # fmt: skip
                return
            self._full = False
            self._queue.append(event)
            self._pending += 1
            if self._worker is None:
                self._worker = threading.Thread(
                    target=self._run, name="convtrack-sdk-worker", daemon=True
                )
                self._worker.start()
            # Wake the worker for a first event (it starts the interval) or a full batch.
            if len(self._queue) in (1, self._settings.max_batch_size):
                self._cond.notify_all()

    def conversion_token(self, order_id: str) -> str:
        """A signed token for one order (``POST /v1/conversion-tokens``, server key):
        give it to ``track(conversion_token=…)`` and the order counts once, however
        often it is tracked. Synchronous; raises ``TransportError`` or ``ApiError``."""
        body = conversion_token_request(order_id)
        with self._token_lock:
            return conversion_token_answer(self._token_transport.post_json(TOKEN_PATH, body))

    def flush(self, timeout: float | None = None) -> bool:
        """Send everything queued now; wait until each event is settled (accepted,
        rejected or dropped). False when ``timeout`` seconds passed first."""
        if threading.current_thread() is self._worker:
            return False  # from on_reject: the worker cannot wait for itself
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            self._flushers += 1
            self._cond.notify_all()
            try:
                while self._pending:
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        return False
                    self._cond.wait(left)
                return True
            finally:
                self._flushers -= 1

    def close(self, timeout: float | None = 10.0) -> bool:
        """Flush (up to ``timeout`` seconds), then stop the worker. Events still unsent
        are dropped, counted as ``closed`` and logged. True when every event was
        settled in time (``stats`` says how)."""
        with self._cond:
            already = self._closed
            self._closed = True
        atexit.unregister(self._close_at_exit)
        if already and self._worker is None:
            return True
        delivered = self.flush(timeout)
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
            worker = self._worker
        self._abort.set()  # a worker waiting out a backoff gives up now
        if worker is not None and worker is not threading.current_thread():
            # An HTTP request in flight may take up to timeout_secs to end.
            worker.join(self._settings.timeout_secs + 1.0)
        self._transport.close()
        with self._token_lock:
            self._token_transport.close()
        return delivered

    def _close_at_exit(self) -> None:
        self.close(self._exit_timeout)

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- the worker ----------------------------------------------------------------------

    def _take(self) -> list[QueuedEvent] | None:
        """The next batch: wait for a first event, then up to flush_interval_secs for a
        full batch (less when flushed or stopping). None: stop."""
        settings = self._settings
        with self._cond:
            while not self._queue and not self._stopping:
                self._cond.wait()
            if not self._queue:
                return None
            deadline = time.monotonic() + settings.flush_interval_secs
            while (
                len(self._queue) < settings.max_batch_size
                and not self._flushers
                and not self._stopping
            ):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            count = min(len(self._queue), settings.max_batch_size)
            return [self._queue.popleft() for _ in range(count)]

    def _run(self) -> None:
        while (batch := self._take()) is not None:
            try:
                deliver_blocking(
                    self._dispatcher, self._transport, batch, self._abort.wait,
                    self._abort.is_set,
                )  # fmt: skip
            except Exception:  # a bug here must not kill the worker and strand the queue
                self._counters.drop(_stats.INTERNAL_ERROR, len(batch))
                log.exception("convtrack: sending failed unexpectedly")
            finally:
                with self._cond:
                    self._pending -= len(batch)
                    self._cond.notify_all()


def _after_fork(ref: weakref.ref[Client]) -> Callable[[], None]:
    """In a forked child the worker thread does not exist and the queue is the parent's
    to send: start empty, with connections, counters and a client id of its own."""

    def reset() -> None:
        client = ref()
        if client is not None:
            # A numbering of its own, so the server can tell the two processes apart.
            client._events = client._events.child(f"{client.client_id}.{os.getpid()}")
            client._counters.reset()
            client._transport.forget()
            client._token_transport.forget()
            client._transport = client._new_transport()
            client._token_transport = client._new_transport()
            client._reset_state()

    return reset
