"""Several requests out at once for one destination: the window of batches not yet committed.

``CommitWindow`` holds all of a runner's bookkeeping between reading and
committing: the entries read since the last cut, the events batched among them
(with when each was logged), and the batches cut and not committed yet. A batch
cut from the log becomes a ``Slot``: its log entries (the skipped ones read
before it too), its ``Job`` and its ``SlotState``. Slots are committed strictly
in order, so the committed offset never passes an event that is still out: a
batch that finished early waits for the ones before it. ``Workers`` run the
jobs on daemon threads, so a stop can abandon a request that hangs instead of
waiting for it (the process exits within its shutdown budget).
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from enum import Enum

from convtrack.deliver.base import Forwarded
from convtrack.deliver.dispatch import Job
from convtrack.log.base import LogEntry

Task = tuple["Future[bool]", Callable[[], bool]]


class SlotState(Enum):
    RUNNING = "running"  # its request is out
    HELD = "held"  # stopped by a pause, an open circuit or a stop: its events wait
    DONE = "done"  # every event delivered, skipped or dead-lettered
    FLAGGED = "flagged"  # done behind a batch still out: its in-flight markers flagged


@dataclass
class Slot:
    """One batch between its cut and its commit."""

    entries: list[LogEntry]
    events: list[Forwarded]  # as cut (the job's own list shrinks as events settle)
    job: Job
    state: SlotState = SlotState.HELD
    future: Future[bool] | None = field(default=None, repr=False)  # while RUNNING

    @property
    def running(self) -> bool:
        return self.state is SlotState.RUNNING

    @property
    def held(self) -> bool:
        return self.state is SlotState.HELD

    @property
    def done(self) -> bool:
        return self.state in (SlotState.DONE, SlotState.FLAGGED)

    def start(self, future: Future[bool]) -> None:
        self.future, self.state = future, SlotState.RUNNING

    def ended(self) -> BaseException | None:
        """Note its ended request: done, or held (stopped, or failed: the error)."""
        assert self.future is not None
        future, self.future = self.future, None
        self.state = SlotState.HELD
        try:
            if future.result():
                self.state = SlotState.DONE
        except Exception as exc:
            return exc
        return None


class CommitWindow:
    """What a runner has read and not committed, in log order."""

    def __init__(self, *, batch_limit: int, max_batches: int, max_wait_secs: float) -> None:
        self.batch_limit = batch_limit
        self.max_batches = max_batches  # batches cut and not committed, at most
        self._max_wait = max_wait_secs
        self._entries: list[LogEntry] = []  # read since the last cut
        self._batch: list[Forwarded] = []  # the ones to send among them
        # per batched event: the entries up to it, and when it was logged (monotonic)
        self._marks: list[tuple[int, float]] = []
        self._slots: deque[Slot] = deque()  # cut, not committed yet, in log order

    # -- reading ------------------------------------------------------------------

    def room(self) -> int:
        """Events that may still be read before the window is full."""
        return (self.max_batches - len(self._slots)) * self.batch_limit - len(self._batch)

    def passed(self, entry: LogEntry) -> None:
        """An entry with nothing to send (skipped, quarantined, already dead-lettered):
        committed with the batch after it."""
        self._entries.append(entry)

    def add(self, entry: LogEntry, event: Forwarded, logged_at: float) -> None:
        self._entries.append(entry)
        self._batch.append(event)
        self._marks.append((len(self._entries), logged_at))

    def first_logged_at(self) -> float | None:
        """When the oldest batched event was logged (monotonic), if any is batched."""
        return self._marks[0][1] if self._marks else None

    # -- cutting ------------------------------------------------------------------

    def due(self, now: float, *, force: bool, free: int) -> int:
        """How many batches to cut now: full, waited long enough, or ``force``; at most
        ``free`` (the requests that may still go out) and the window's room."""
        count = 0
        while count < free and len(self._slots) + count < self.max_batches:
            start = count * self.batch_limit
            if start >= len(self._batch):
                break
            full = len(self._batch) - start >= self.batch_limit
            waited = now - self._marks[start][1]
            if not (force or full or waited >= self._max_wait):
                break
            count += 1
        return count

    def next_events(self, batches: int) -> list[Forwarded]:
        """The events the next ``batches`` cuts will hold."""
        return self._batch[: batches * self.batch_limit]

    def cut(self) -> Slot:
        """The next batch, with the entries up to its last event, as a held slot."""
        count = min(self.batch_limit, len(self._batch))
        events = self._batch[:count]
        upto = self._marks[count - 1][0]
        entries = self._entries[:upto]
        del self._batch[:count], self._entries[:upto]
        self._marks = [(n - upto, at) for n, at in self._marks[count:]]
        slot = Slot(entries=entries, events=events, job=Job(events=list(events)))
        self._slots.append(slot)
        return slot

    # -- settling -----------------------------------------------------------------

    def note_ended(self, *, wait: bool = False) -> BaseException | None:
        """Note the slots whose requests ended (``wait``: every one; they must have ended
        or end now); the first error a job raised."""
        error: BaseException | None = None
        for slot in self._slots:
            future = slot.future
            if future is not None and (wait or future.done()):
                error = error or slot.ended()
        return error

    def settle_front(self) -> list[LogEntry]:
        """Take the settled slots at the front, and the passed entries after the last
        batch once nothing else is left: the entries to commit."""
        settled: list[LogEntry] = []
        while self._slots and self._slots[0].done:
            settled += self._slots.popleft().entries
        settled += self.take_passed()
        return settled

    def take_passed(self) -> list[LogEntry]:
        """The entries read with nothing to send, once nothing is batched or out."""
        if self._batch or self._slots or not self._entries:
            return []
        passed, self._entries = self._entries, []
        return passed

    def done_behind(self) -> list[Slot]:
        """Slots done behind a batch still out whose in-flight markers are not flagged."""
        return [slot for slot in self._slots if slot.state is SlotState.DONE]

    @staticmethod
    def flag(slots: list[Slot]) -> None:
        for slot in slots:
            slot.state = SlotState.FLAGGED

    # -- views ----------------------------------------------------------------------

    def __iter__(self) -> Iterator[Slot]:
        return iter(self._slots)

    @property
    def cut_any(self) -> bool:
        """Some batch is cut and not committed."""
        return bool(self._slots)

    @property
    def empty(self) -> bool:
        """Nothing batched and nothing cut (passed entries may wait)."""
        return not self._batch and not self._slots

    def batched(self) -> int:
        return len(self._batch)

    def running(self) -> int:
        return sum(1 for slot in self._slots if slot.running)

    def any_held(self) -> bool:
        return any(slot.held for slot in self._slots)

    def futures(self) -> list[Future[bool]]:
        return [slot.future for slot in self._slots if slot.future is not None]

    def uncommitted(self) -> list[LogEntry]:
        return [entry for slot in self._slots for entry in slot.entries] + self._entries

    def buffered_events(self) -> int:
        """Events batched or in a batch not settled yet."""
        return len(self._batch) + sum(len(slot.job.events) for slot in self._slots
                                      if not slot.done)  # fmt: skip


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
