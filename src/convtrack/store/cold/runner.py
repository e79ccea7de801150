"""Run a store process's table writers on one thread, with upkeep and a failing lake's retry.

``ColdStoreRunner`` polls every ``TableWriter`` (store/cold/writer.py) in
turn, runs compaction and retention between polls when due (so upkeep never
races a flush), retries a failing lake with backoff and probes it
(store/cold/retry.py), answers flushes other threads ask for
(``POST /v1/admin/flush``) and, at a stop, reads what the sources hold and
flushes it once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from convtrack.clock import Clock, SystemClock
from convtrack.errors import ConvtrackError
from convtrack.observe.metrics import Metrics
from convtrack.store.cold.retry import LakeRetry
from convtrack.store.cold.writer import TableWriter

log = logging.getLogger("convtrack.cold")

# At a stop, what the source holds is read for at most this long before the last flush.
# A runner whose last round failed (a broker that was away, a backoff) reads until the
# source has given nothing for FINAL_QUIET_SECS: its consumer may need a moment to fetch
# again, and a poll without a wait would end the read at once and leave those rows for
# the next start.
FINAL_READ_SECS = 5.0
FINAL_QUIET_SECS = 0.5


def _read_to_quiet(writer: TableWriter, deadline: float) -> None:
    quiet_since: float | None = None
    while (now := time.monotonic()) < deadline:
        if writer.poll_once(timeout_secs=0.1):
            quiet_since = None
        elif quiet_since is None:
            quiet_since = now
        elif now - quiet_since >= FINAL_QUIET_SECS:
            return


# A requested flush reads each source to its end first, for at most this long.
REQUESTED_READ_SECS = 5.0


class FlushRequest:
    """A flush asked for by another thread (``POST /v1/admin/flush``), done by the runner's.

    The writers belong to the runner's thread; the asking thread waits on
    ``wait`` and then reads ``rows`` (per table) or ``error``.
    """

    def __init__(self) -> None:
        self.rows: dict[str, int] = {}
        self.error: str | None = None
        self._done = threading.Event()

    def finish(self, rows: dict[str, int], error: str | None = None) -> None:
        """The first answer stands (a failure after a flush does not undo it)."""
        if self._done.is_set():
            return
        self.rows, self.error = rows, error
        self._done.set()

    def wait(self, timeout_secs: float) -> bool:
        return self._done.wait(timeout_secs)


class ColdStoreRunner:
    """Runs the table writers on one thread; retries a failing lake with backoff.

    Every ``maintain_interval_secs`` it also runs ``maintain`` (compaction,
    retention) between polls, on the same thread, so upkeep never races a flush.
    """

    def __init__(
        self,
        writers: list[TableWriter],
        metrics: Metrics,
        maintain: Callable[[], None] | None = None,
        maintain_interval_secs: float = 3600.0,
        clock: Clock | None = None,
        stall_secs: float = 60.0,
    ) -> None:
        self._writers = writers
        self._stall_secs = stall_secs
        self._metrics = metrics
        self._maintain = maintain
        self._maintain_interval = maintain_interval_secs
        # Real time unless a test drives ``step`` by hand: the backoff must pass by itself.
        self._clock: Clock = clock or SystemClock()
        self._beat = self._clock.monotonic()  # the last round that completed
        self._maintaining = False  # compaction may take long: it is progress, not a stall
        self._last_maintain = self._clock.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cold-store", daemon=True)
        self.retry = LakeRetry(self._clock, self._probe_lakes)
        self._requests: list[FlushRequest] = []
        self._requests_lock = threading.Lock()
        self._wake = threading.Event()  # a flush was requested: do not sit out the wait

    @property
    def last_error(self) -> str | None:
        return self.retry.last_error

    def _probe_lakes(self) -> None:
        for lake in {id(w.lake): w.lake for w in self._writers}.values():
            lake.probe()

    def start(self) -> None:
        self._thread.start()

    def health(self) -> dict[str, object]:
        # A round polls for at most a fraction of a second, work or not: a thread that
        # completed none for stall_secs (or died) is stuck, whatever its last error says.
        quiet = self._clock.monotonic() - self._beat
        started = self._thread.ident is not None
        died = started and not self._thread.is_alive()
        stuck = started and not self._maintaining and quiet >= self._stall_secs
        stalled = not self._stop.is_set() and (died or stuck)
        self._metrics.stage_stalled.labels("cold").set(1 if stalled else 0)
        detail = self.last_error or "ok"
        if stalled:
            what = "the cold-store thread died" if died else f"no round completed for {quiet:.0f} s"
            detail = f"stalled: {what} ({detail})"
        return {
            "healthy": self.last_error is None and not stalled,
            "detail": detail,
            "stalled": stalled,
            "buffered_rows": sum(w.buffered for w in self._writers),
        }

    def _run(self) -> None:
        while not self._stop.is_set():
            wait = self.step()
            # Woken early by a flush request or by stop (which sets both events).
            if wait > 0 and self._wake.wait(wait):
                self._wake.clear()
        self._refuse_requests("the cold store is stopping")

    def request_flush(self) -> FlushRequest | None:
        """Ask the runner's thread to read every source to its end and flush now.

        None when its thread does not run (not started, or stopping): nobody
        would answer. A lake that is failing answers the request with its error.
        """
        request = FlushRequest()
        with self._requests_lock:
            if not self._thread.is_alive() or self._stop.is_set():
                return None
            self._requests.append(request)
        self._wake.set()
        return request

    def _take_requests(self) -> list[FlushRequest]:
        with self._requests_lock:
            taken, self._requests = self._requests, []
        return taken

    def _refuse_requests(self, why: str) -> None:
        for request in self._take_requests():
            request.finish({}, why)

    def _flush_requested(self, requests: list[FlushRequest]) -> None:
        """Read each source to its end (within REQUESTED_READ_SECS) and flush it all."""
        before = {w.table: w.rows_written for w in self._writers}
        deadline = time.monotonic() + REQUESTED_READ_SECS
        for writer in self._writers:
            while writer.poll_once(timeout_secs=0.0) and time.monotonic() < deadline:
                pass
            writer.flush()
        rows = {w.table: w.rows_written - before[w.table] for w in self._writers}
        for request in requests:
            request.finish(rows)

    def step(self) -> float:
        """One round (poll every writer, upkeep when due), or a probe of a failing lake.

        Returns how long to wait before the next step (see store/cold/retry.py).
        """
        if not self.retry.due():
            self._refuse_requests(f"the lake is failing: {self.retry.last_error}")
            return max(self.retry.wait_secs(), 0.01)  # never a busy loop, whatever the clock
        requests = self._take_requests()
        try:
            if requests:
                self._flush_requested(requests)
            for writer in self._writers:
                writer.poll_once(timeout_secs=0.1)
            if (
                self._maintain is not None
                and self._clock.monotonic() - self._last_maintain >= self._maintain_interval
            ):
                self._maintaining = True
                try:
                    self._maintain()
                finally:
                    self._maintaining = False
                self._last_maintain = self._clock.monotonic()
            self.retry.succeeded()
            self._beat = self._clock.monotonic()
        except ConvtrackError as exc:
            for request in requests:
                request.finish({}, f"the lake is failing: {exc}")
            delay = self.retry.failed(str(exc))
            self._metrics.errors.labels("cold", type(exc).__name__).inc()
            log.warning("lake_write_failed", extra={"error": str(exc), "retry_in_secs": delay})
        return self.retry.wait_secs()

    def flush_all(self) -> None:
        """Read every table's source to its end and flush it all now.

        For tests and tools that drive the writers by hand: only while the
        runner's thread is not running (a writer is not shared between threads).
        """
        if self._thread.is_alive():
            raise RuntimeError("flush_all while the cold-store thread runs")
        for writer in self._writers:
            while writer.poll_once(timeout_secs=0.0):
                pass
            writer.flush()

    def stop(self, flush: bool = True) -> None:
        """Stop polling, then flush what is buffered (once; the rest replays on restart)."""
        self._stop.set()
        self._wake.set()  # the thread may sit in a backoff wait: end it now
        if self._thread.is_alive():
            self._thread.join(30)
        if self._thread.is_alive():
            log.warning("cold_store_still_busy_at_stop")  # its rows replay on the next start
            return
        if flush:
            deadline = time.monotonic() + FINAL_READ_SECS
            recovering = self.retry.last_error is not None
            for writer in self._writers:
                try:
                    if recovering:
                        _read_to_quiet(writer, deadline)
                    else:  # reading all along: what the source holds is there already
                        while writer.poll_once(timeout_secs=0.0) and time.monotonic() < deadline:
                            pass
                    writer.flush()
                except ConvtrackError as exc:
                    log.warning(
                        "final_flush_failed", extra={"table": writer.table, "error": str(exc)}
                    )
        for writer in self._writers:
            writer.source.close()
