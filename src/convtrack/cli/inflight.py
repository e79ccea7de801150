"""What the pipeline still holds between the event log and the lake, for ``convtrack reconcile``.

Per log partition, three stretches can be in flight, each found from positions
that every backend keeps exactly:

- **not counted**: event-log entries at or after the processor's position
  (the hot store's positions, which move in the same transaction as the
  counts). Accepted (answered 202), not yet counted nor judged duplicates.
- **counted, not published**: log entries the hot store has applied beyond the
  last event the processed log holds. A crash between counting and publishing
  leaves such a stretch (the processor publishes it when it resumes), but so
  does a run of duplicates or dropped entries at the end of the log, which
  have nothing to publish. Its size is an upper bound.
- **not in the lake**: processed-log records after the lake's chain end (its
  manifest), counted and published, waiting for the cold store's next flush.

What those entries are (their event date, whether they count) is known only
by reading them. Reconcile reads them where the log is a local file (the
embedded SQLite log, up to ``MAX_READ`` entries per stretch); on Kafka it
knows how many there are, not what they are.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import msgspec

from convtrack.log.base import EventLog, LogEntry
from convtrack.log.published import NOTHING_READ, FirstCopies
from convtrack.model.event import decode_envelope
from convtrack.model.processed import decode_processed
from convtrack.process.base import GROUP as PROCESSOR_GROUP
from convtrack.process.enrich import utc_date
from convtrack.process.runner import published_through
from convtrack.store.cold.base import ColdStore
from convtrack.store.cold.manifest import read_state
from convtrack.store.cold.reports import ReportRow
from convtrack.store.hot.base import HotStore

# Reading a stretch costs a decode per entry (about a second per million): beyond
# this many, reconcile counts the stretch but does not read what it holds.
MAX_READ = 2_000_000
_READ_BATCH = 10_000
_GROUP = "reconcile"  # never commits: a reader that leaves no trace


class Positions(msgspec.Struct, frozen=True):
    """Where each stage is, per partition (next position to read, or the log's end)."""

    log_end: dict[int, int]
    counted: dict[int, int]  # the processor's positions, from the hot store
    published: dict[int, int]  # per source partition, after its last published event
    processed_end: dict[int, int]
    in_lake: dict[int, int]  # per processed partition, the first record not in the lake
    lake_through: dict[int, int]  # the lake's first-copy filter state at that point


class InFlight(msgspec.Struct, frozen=True, kw_only=True):
    """The three stretches, and what reading them told about one event date.

    ``*_dated`` and ``to_lake`` are None when the stretch was not read (Kafka,
    or longer than MAX_READ).
    """

    not_counted: int  # accepted events the processor has not taken yet
    not_counted_dated: int | None  # of them, with the reconciled event date
    not_published: int  # at most this many counted events not yet published
    not_in_lake: int  # processed records (first copies when read) not yet in the lake
    not_in_lake_dated: int | None
    to_lake: list[ReportRow] | None  # the conversions of the date among not_in_lake

    @property
    def total(self) -> int:
        return self.not_counted + self.not_published + self.not_in_lake


def _ends(log: EventLog) -> dict[int, int]:
    return {p: entry.offset + 1 for p, entry in log.last_entries().items()}


def positions(events: EventLog, processed: EventLog, hot: HotStore, lake: ColdStore) -> Positions:
    """Every stage's position now, downstream first (each stage only ever moves on)."""
    state = read_state(lake, "events")
    processed_end = _ends(processed)
    published = published_through(processed)
    counted = hot.positions(PROCESSOR_GROUP)
    return Positions(
        log_end=_ends(events),
        counted=counted,
        published=published,
        processed_end=processed_end,
        in_lake={p: last + 1 for p, last in state.flushed_through.items()},
        lake_through=dict(state.source_through),
    )


def _read(log: EventLog, start: Mapping[int, int], end: Mapping[int, int]) -> Iterator[LogEntry]:
    """The entries from ``start`` (0 where absent) up to ``end``, per partition."""
    consumer = log.consumer(_GROUP)
    try:
        wanted = {p: start.get(p, 0) for p, e in end.items() if e > start.get(p, 0)}
        consumer.seek(wanted)
        while wanted:
            entries = consumer.poll(_READ_BATCH, 0.0)
            if not entries:
                return  # the log ended earlier than it said (it cannot shrink): nothing more
            for entry in entries:
                if entry.partition in wanted and entry.offset < end[entry.partition]:
                    yield entry
                if entry.offset + 1 >= end.get(entry.partition, 0):
                    wanted.pop(entry.partition, None)
    finally:
        consumer.close()


def _dated(log: EventLog, start: Mapping[int, int], end: Mapping[int, int], day: str) -> int:
    """How many accepted events in the stretch have the event date ``day``."""
    count = 0
    for entry in _read(log, start, end):
        try:
            envelope = decode_envelope(entry.payload)
        except (msgspec.DecodeError, msgspec.ValidationError):
            continue  # the processor drops it: it is never counted
        if utc_date(envelope.event_time_us) == day:
            count += 1
    return count


def _to_lake(processed: EventLog, at: Positions, day: str) -> tuple[int, int, list[ReportRow]]:
    """First copies not yet in the lake: how many, how many dated ``day``, and the
    conversions of ``day`` among them per campaign (what the lake will add)."""
    copies = FirstCopies({p: at.lake_through.get(p, NOTHING_READ) for p in at.processed_end})
    kept = dated = 0
    counts: dict[str, int] = {}
    values: dict[str, dict[str, int]] = {}
    for entry in _read(processed, at.in_lake, at.processed_end):
        event = decode_processed(entry.payload)
        if not copies.keep(entry.partition, event):
            continue  # a late copy: the lake never writes it
        kept += 1
        if event.event_date != day:
            continue
        dated += 1
        if not event.is_conversion:  # the processor's verdict, as the lake reads it
            continue
        counts[event.campaign_id] = counts.get(event.campaign_id, 0) + 1
        value = values.setdefault(event.campaign_id, {})
        money = event.event
        if money.value is not None and money.currency is not None:
            value[money.currency] = value.get(money.currency, 0) + money.value
    rows = [ReportRow(c, counts[c], values[c]) for c in sorted(counts)]
    return kept, dated, rows


def _behind(end: Mapping[int, int], start: Mapping[int, int]) -> int:
    return sum(max(0, e - start.get(p, 0)) for p, e in end.items())


def in_flight(
    events: EventLog, processed: EventLog, at: Positions, day: str, *, readable: bool
) -> InFlight:
    """The stretches at ``at``; ``readable``: the logs are local files, read what they hold."""
    if readable:  # the very stretches read below, up to the ends of ``at``
        not_counted = _behind(at.log_end, at.counted)
        not_in_lake = _behind(at.processed_end, at.in_lake)
    else:  # the logs' own lag knows where retention starts (Kafka): counting from 0 would not
        not_counted = events.lag(at.counted).events
        not_in_lake = processed.lag(at.in_lake).events
    not_published = sum(
        max(0, position - at.published.get(p, 0)) for p, position in at.counted.items()
    )
    not_counted_dated: int | None = None
    not_in_lake_dated: int | None = None
    to_lake: list[ReportRow] | None = None
    if readable and not_counted <= MAX_READ:
        not_counted_dated = _dated(events, at.counted, at.log_end, day)
    if readable and not_in_lake <= MAX_READ:
        not_in_lake, not_in_lake_dated, to_lake = _to_lake(processed, at, day)
    return InFlight(
        not_counted=not_counted,
        not_counted_dated=not_counted_dated,
        not_published=not_published,
        not_in_lake=not_in_lake,
        not_in_lake_dated=not_in_lake_dated,
        to_lake=to_lake,
    )
