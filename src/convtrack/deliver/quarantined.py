"""A destination's poison entries: a processed event it cannot even select is quarantined.

Selecting decodes the processed record and builds the canonical payload
(``deliver.select``); if that raises for one entry (for a reason that is not a
backend's), the entry goes to the quarantine (stage ``deliver``, scope the
destination) before its batch is committed, and the destination goes on with
the next one instead of reading it again forever. Events whose request or
answer fails are dead-lettered by the dispatcher instead (they have a payload
to keep).

Replay: queued rows of the destination are selected again and sent once
through the dispatcher, between the runner's own requests (like dead-letter
replays): delivered, skipped or dead-lettered, each leaves the quarantine;
one that still cannot be selected stays, with the new error. For a destination
that cannot deduplicate on event_id (``claim_replays``), the claim is settled before
sending (``QuarantineStore.settle_claims``): a replay cut off by a crash after its
request went out, or still retrying when its lease ends, is then not sent again by
whichever process claims next; the row stays with the note ``REPLAY_CLAIM_NOTE`` for
an operator to check. Rows held before their first request (a pause, a stop) are
given back, queued as before.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from convtrack.clock import Clock
from convtrack.deliver.base import Forwarded
from convtrack.deliver.dispatch import Dispatcher, Job, Settle
from convtrack.deliver.exchange import Stopped
from convtrack.deliver.keeper import REPLAY_CLAIM_NOTE
from convtrack.errors import is_transient
from convtrack.log.base import LogEntry
from convtrack.model.processed import decode_processed
from convtrack.observe.metrics import Metrics
from convtrack.store.quarantine.base import Quarantined, QuarantineStore, short_error

log = logging.getLogger("convtrack.deliver")

STAGE = "deliver"
REPLAY_BATCH = 100
REPLAY_INTERVAL_SECS = 1.0

Select = Callable[[LogEntry], Forwarded | str | None]


class DeliverQuarantine:
    def __init__(
        self,
        name: str,
        store: QuarantineStore | None,
        clock: Clock,
        metrics: Metrics,
        *,
        claim_replays: bool,
    ) -> None:
        self.name = name
        self._claim_replays = claim_replays
        self._store = store
        self._clock = clock
        self._metrics = metrics
        self._last_replay = clock.monotonic() - REPLAY_INTERVAL_SECS

    def may_keep(self, exc: BaseException) -> bool:
        return self._store is not None and not is_transient(exc)

    def put_aside(self, entry: LogEntry, exc: BaseException) -> None:
        """Keep ``entry`` durably (raises ``StoreError`` if it cannot be: read it again)."""
        assert self._store is not None
        try:
            event_id: str | None = decode_processed(entry.payload).event.event_id
        except Exception:
            event_id = None
        row = Quarantined(
            stage=STAGE, scope=self.name, log="processed", partition=entry.partition,
            offset=entry.offset, key=entry.key, payload=entry.payload, event_id=event_id,
            error=short_error(exc), at_us=self._clock.now_us(),
        )  # fmt: skip
        new = self._store.add([row])
        self._metrics.quarantined.labels(STAGE).inc(new)
        extra = {"destination": self.name, "event_id": event_id, "offset": entry.offset,
                 "error": row.error}  # fmt: skip
        log.error("event_quarantined", extra=extra)

    def replay(self, select: Select, dispatcher: Dispatcher, settle: Settle) -> int:
        """Send the destination's queued rows once (at most once a second); returns how many
        left the quarantine."""
        now = self._clock.monotonic()
        if self._store is None or now - self._last_replay < REPLAY_INTERVAL_SECS:
            return 0
        self._last_replay = now
        store = self._store
        rows = store.claim([STAGE], self.name, REPLAY_BATCH, self._clock.now_us())
        settled: list[int] = []
        events: list[Forwarded] = []
        by_event: dict[int, int] = {}
        for row in rows:
            e = row.event
            entry = LogEntry(partition=e.partition, offset=e.offset, key=e.key,
                             payload=e.payload, logged_at_us=e.at_us)  # fmt: skip
            try:
                chosen = select(entry)
            except Exception as exc:
                if is_transient(exc):
                    raise
                store.failed_again(row.id, short_error(exc), self._clock.now_us())
                continue
            if isinstance(chosen, Forwarded):
                events.append(chosen)
                by_event[id(chosen)] = row.id
            else:
                settled.append(row.id)  # skipped (filtered, consent...): nothing to send
        if events and self._claim_replays:
            # Settled before the request goes out: a lapsed lease must not send it twice.
            ours = set(store.settle_claims([by_event[id(e)] for e in events], REPLAY_CLAIM_NOTE))
            events = [e for e in events if by_event[id(e)] in ours]
        if events:
            job = Job(events=list(events))
            try:
                done = dispatcher.run(job, settle)
            except Stopped:
                done = False
            # Sent, dead-lettered or skipped: settled. Held ones come back after the lease,
            # or, settled before sending, are given back if no request went out for them.
            left = {id(e) for e in job.events} if not done else set()
            settled += [by_event[id(e)] for e in events if id(e) not in left]
            if left and self._claim_replays and job.attempts == 0:
                store.give_back([by_event[id(e)] for e in events if id(e) in left])
        store.remove(settled)
        self._metrics.quarantine_replayed.labels(STAGE).inc(len(settled))
        return len(settled)
