"""What the lake holds, for answers that came back empty (or ``--verbose``).

The lake is written by the running server's cold store every
``cold.flush_interval_secs`` (5 minutes by default) and at a stop, so for a
while after the first events a query answers nothing. An empty answer alone
does not say whether the question was wrong or the data is not there yet:
these lines say which dates the lake holds, when it was last flushed, how
many processed events wait for the next flush, and how many accepted ones
the processor has not published yet (read from the embedded logs; with
Kafka the running server is the one to ask, by ``convtrack flush``).
"""

from __future__ import annotations

from convtrack.clock import Clock, SystemClock
from convtrack.config import Settings
from convtrack.log.base import LogLag
from convtrack.runtime.backends import open_log
from convtrack.store.cold.base import ColdStore
from convtrack.store.cold.manifest import read_state
from convtrack.store.cold.summary import LakeSummary


def _ago(seconds: float) -> str:
    if seconds < 90:
        return f"{max(0, round(seconds))} s ago"
    if seconds < 5400:
        return f"{round(seconds / 60)} min ago"
    return f"{seconds / 3600:.1f} h ago"


def _utc(us: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(us / 1e6, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def summary_lines(summary: LakeSummary, uri: str, now_us: int) -> list[str]:
    if summary.last_flush_at_us is None:
        return [f"the lake ({uri}) holds no events: the server has not flushed it yet"]
    flushed = _utc(summary.last_flush_at_us)
    when = f"last flush {flushed} ({_ago((now_us - summary.last_flush_at_us) / 1e6)})"
    if summary.first_date is None:
        return [f"the lake ({uri}) holds no events; {when}"]
    span = (
        summary.first_date
        if summary.first_date == summary.last_date
        else f"{summary.first_date} to {summary.last_date}"
    )
    return [f"the lake ({uri}) holds {summary.rows} event(s) dated {span}; {when}"]


FLUSH_NOW = "`convtrack flush` writes them now"


def waiting_line(waiting: LogLag | None, interval_secs: float, unprocessed: int = 0) -> str:
    """The processed events not yet in the lake (None: not known from here), and then the
    accepted ones the processor has not published yet."""
    flush_now = FLUSH_NOW
    if waiting is not None and waiting.events == 0 and unprocessed:
        return (
            f"up to {unprocessed} accepted event(s) are not processed yet (the processor"
            f" takes them within moments); {flush_now}"
        )
    if waiting is None:
        return (
            "events processed since the last flush are not in it yet (the server writes"
            f" them every {interval_secs:g} s, cold.flush_interval_secs, and at stop);"
            f" {flush_now}"
        )
    if waiting.events == 0:
        return "no processed event is waiting for a flush"
    return (
        f"{waiting.events} processed event(s) are not in the lake yet (the oldest for"
        f" {waiting.seconds:.0f} s): the server writes them at its next flush (every"
        f" {interval_secs:g} s, cold.flush_interval_secs) and at stop; {flush_now}"
    )


def waiting_for_flush(settings: Settings, flushed_through: dict[int, int]) -> LogLag | None:
    """Processed records after the lake's chain end, from the embedded processed log."""
    if settings.log.kind != "sqlite":
        return None  # Kafka: a broker round trip per partition, maybe to a broker that is away
    path = settings.data_dir / "log" / "processed.db"
    if not path.is_file():
        return None
    processed = open_log(settings, "processed", SystemClock())
    try:
        return processed.lag({p: last + 1 for p, last in flushed_through.items()})
    finally:
        processed.close()


def waiting_for_processing(settings: Settings) -> int:
    """Accepted events after the last one the processor published (an upper bound: a run
    of duplicates at the end of the log publishes nothing), from the embedded logs."""
    from convtrack.process.runner import published_through

    log_dir = settings.data_dir / "log"
    if settings.log.kind != "sqlite" or not (log_dir / "events.db").is_file():
        return 0
    events = open_log(settings, "events", SystemClock(), written_elsewhere=True)
    try:
        ends = {p: entry.offset + 1 for p, entry in events.last_entries().items()}
    finally:
        events.close()
    published: dict[int, int] = {}
    if (log_dir / "processed.db").is_file():
        processed = open_log(settings, "processed", SystemClock(), written_elsewhere=True)
        try:
            published = published_through(processed)
        finally:
            processed.close()
    return sum(max(0, end - published.get(p, 0)) for p, end in ends.items())


def lake_hint(settings: Settings, lake: ColdStore, clock: Clock | None = None) -> list[str]:
    """Lines saying what the lake holds and what is on its way to it."""
    clock = clock or SystemClock()
    state = read_state(lake, "events")
    lines = summary_lines(LakeSummary.of(state), lake.uri, clock.now_us())
    waiting = waiting_for_flush(settings, dict(state.flushed_through))
    caught_up = waiting is not None and waiting.events == 0
    unprocessed = waiting_for_processing(settings) if caught_up else 0
    lines.append(waiting_line(waiting, settings.cold.flush_interval_secs, unprocessed))
    return lines
