"""The work behind ``POST /v1/admin/flush`` in a process that runs the store role.

First the processor takes what the event log held when the request came (so
that events answered 202 just before it are in the flush), for at most
``PROCESSOR_WAIT_SECS``; then the cold store's thread reads its sources to
their end and flushes (``ColdStoreRunner.request_flush``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from convtrack.api.flush import FlushRefused
from convtrack.log.base import EventLog
from convtrack.model import codes
from convtrack.store.cold.base import ColdStore
from convtrack.store.cold.manifest import read_state
from convtrack.store.cold.runner import ColdStoreRunner
from convtrack.store.cold.summary import LakeSummary

PROCESSOR_WAIT_SECS = 5.0
FLUSH_WAIT_SECS = 20.0
_POLL_SECS = 0.02


class LakeFlush:
    def __init__(
        self,
        *,
        events: EventLog,
        processed_positions: Callable[[], Mapping[int, int]],
        cold: Callable[[], ColdStoreRunner | None],
        cold_detail: Callable[[], str],
        lake: ColdStore,
    ) -> None:
        """``processed_positions``: per event-log partition, the next entry the processor
        will take (this process's runner, or the positions it keeps in the hot store)."""
        self._events = events
        self._processed_positions = processed_positions
        self._cold = cold
        self._cold_detail = cold_detail
        self._lake = lake

    def __call__(self) -> dict[str, Any]:
        caught_up = self._wait_for_processor()
        runner = self._cold()
        if runner is None:
            raise _unavailable(f"the cold store is not running: {self._cold_detail()}")
        request = runner.request_flush()
        if request is None:
            raise _unavailable("the cold store is not running (starting or stopping)")
        if not request.wait(FLUSH_WAIT_SECS):
            raise _unavailable(f"the flush did not finish within {FLUSH_WAIT_SECS:g} s")
        if request.error is not None:
            raise _unavailable(request.error)
        summary = LakeSummary.of(read_state(self._lake, "events"))
        return {
            "flushed": request.rows,
            "processor_caught_up": caught_up,
            "lake": summary.as_json(),
        }

    def _wait_for_processor(self) -> bool:
        """Whether the processor took every entry the log held at the start (in time)."""
        ends = {p: entry.offset + 1 for p, entry in self._events.last_entries().items()}
        deadline = time.monotonic() + PROCESSOR_WAIT_SECS
        while True:
            at = self._processed_positions()
            if all(at.get(p, 0) >= end for p, end in ends.items()):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(_POLL_SECS)


def _unavailable(message: str) -> FlushRefused:
    return FlushRefused(503, codes.ERR_COLD_STORE_UNAVAILABLE, message)
