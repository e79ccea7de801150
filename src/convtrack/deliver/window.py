"""Several requests out at once for one destination: the window of batches not yet committed.

A batch cut from the log becomes a ``Slot``: its log entries (the skipped ones
read before it too) and its ``Job``. Slots are committed strictly in order, so
the committed offset never passes an event that is still out: a batch that
finished early waits for the ones before it. ``Workers`` run the jobs on
daemon threads, so a stop can abandon a request that hangs instead of waiting
for it (the process exits within its shutdown budget).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

from convtrack.deliver.base import Forwarded
from convtrack.deliver.dispatch import Job
from convtrack.log.base import LogEntry

Task = tuple["Future[bool]", Callable[[], bool]]


@dataclass
class Slot:
    """One batch between its cut and its commit."""

    entries: list[LogEntry]
    events: list[Forwarded]  # as cut (the job's own list shrinks as events settle)
    job: Job
    future: Future[bool] | None = field(default=None, repr=False)
    done: bool = False  # every event delivered, skipped or dead-lettered
    flagged: bool = False  # done behind a batch still out: in-flight markers flagged

    @property
    def running(self) -> bool:
        return self.future is not None

    @property
    def held(self) -> bool:
        """Stopped by a pause, an open circuit or a stop: its remaining events wait."""
        return self.future is None and not self.done


def completed(value: Callable[[], bool]) -> Future[bool]:
    """Run ``value`` here and now (one request at a time: no thread needed)."""
    future: Future[bool] = Future()
    try:
        future.set_result(value())
    except Exception as exc:  # kept for the runner thread to raise, as a worker's would be
        future.set_exception(exc)
    return future


class Workers:
    """``count`` daemon threads taking jobs in order; started at the first job."""

    def __init__(self, name: str, count: int) -> None:
        self._name = name
        self._count = count
        self._tasks: queue.SimpleQueue[Task | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def submit(self, run: Callable[[], bool]) -> Future[bool]:
        future: Future[bool] = Future()
        with self._lock:
            if not self._threads:
                self._threads = [
                    threading.Thread(target=self._work, name=f"{self._name}-{i}", daemon=True)
                    for i in range(self._count)
                ]
                for thread in self._threads:
                    thread.start()
        self._tasks.put((future, run))
        return future

    def _work(self) -> None:
        while (task := self._tasks.get()) is not None:
            future, run = task
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(run())
            except BaseException as exc:  # the runner thread raises it
                future.set_exception(exc)

    def close(self) -> None:
        """Let idle threads end; a thread still in a request ends after it."""
        with self._lock:
            for _ in self._threads:
                self._tasks.put(None)
