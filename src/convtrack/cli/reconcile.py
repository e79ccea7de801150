"""``convtrack reconcile``: the hot counters against the lake, per campaign, for one day.

Both sides count each new event once: the hot store when the processor
counts it, the lake when the cold store flushes it; both with the one
definition of a counted conversion (``store/cold/counted.py``). Between them,
and before them, events are in flight (``cli/inflight.py``): accepted but not
counted yet, counted but not yet in the lake. So the answer is one of:

- ``agree`` (exit 0): both sides match and nothing in flight can change the day;
- ``differ`` (exit 1): they do not match, and nothing in flight explains it;
- ``behind`` (exit 3): events in flight may still change the day's numbers,
  so it cannot be judged yet; run again once the pipeline has caught up;
- ``empty`` (exit 4): neither side counted a conversion on that day and nothing
  in flight can add one: there is nothing to compare (a wrong date, or a day
  the lake has not been flushed for yet), which "agree" would hide.

Exit 2 is for a side that cannot be read (and for bad usage).
"""

from __future__ import annotations

from contextlib import ExitStack
from typing import Final, Literal

import duckdb
import msgspec

from convtrack.cli.attribution import money_text
from convtrack.cli.inflight import InFlight, Positions, in_flight, positions
from convtrack.cli.output import render
from convtrack.clock import SystemClock
from convtrack.config import Settings
from convtrack.errors import StoreError
from convtrack.log.base import EventLog
from convtrack.model.currency import format_money
from convtrack.runtime.backends import open_hot_store, open_lake, open_log
from convtrack.store.cold import reports
from convtrack.store.cold.base import ColdStore
from convtrack.store.cold.query import connect
from convtrack.store.cold.reports import ReportRow
from convtrack.store.hot.base import HotStore

Status = Literal["agree", "differ", "behind", "empty"]
EXIT_CODES: Final[dict[Status, int]] = {"agree": 0, "differ": 1, "behind": 3, "empty": 4}
# Reads of both sides are repeated while positions move under them (a live pipeline).
_ATTEMPTS = 3

COLUMNS = [
    "campaign_id",
    "hot_conversions",
    "lake_conversions",
    "to_lake_conversions",
    "hot_value",
    "lake_value",
    "to_lake_value",
    "status",
]


class CampaignRow(msgspec.Struct, frozen=True, kw_only=True):
    campaign_id: str
    hot_conversions: int
    lake_conversions: int
    to_lake_conversions: int | None  # counted, on their way to the lake (None: not known)
    hot_value: dict[str, int]
    lake_value: dict[str, int]
    to_lake_value: dict[str, int] | None
    status: Literal["ok", "DIFFERS"]


class Result(msgspec.Struct, frozen=True, kw_only=True):
    date: str
    status: Status
    exit_code: int
    campaigns: list[CampaignRow]
    differences: list[str]  # one line per campaign whose hot and lake (+ to_lake) differ
    in_flight: InFlight
    settled: bool  # no stage moved while both sides were read
    summary: str

    @property
    def text(self) -> str:
        return render_text(self)


def _money(value: dict[str, int] | None) -> str:
    if value is None:
        return "?"
    return money_text(value)


def compare(
    hot: list[ReportRow], lake: list[ReportRow], to_lake: list[ReportRow] | None
) -> tuple[list[CampaignRow], list[str]]:
    """Per campaign: hot against what the lake holds plus what is on its way to it."""
    by_hot = {row.key: row for row in hot}
    by_lake = {row.key: row for row in lake}
    by_coming = {row.key: row for row in to_lake or []}
    expected = {row.key: row for row in reports.merge(lake, to_lake or [])}
    empty = ReportRow("", 0, {})
    rows: list[CampaignRow] = []
    differences: list[str] = []
    for campaign in sorted(by_hot.keys() | expected.keys()):
        h, c, e = (
            by_hot.get(campaign, empty),
            by_lake.get(campaign, empty),
            expected.get(campaign, empty),
        )
        coming = None if to_lake is None else by_coming.get(campaign, empty)
        same = h.conversions == e.conversions and h.value == e.value
        rows.append(
            CampaignRow(
                campaign_id=campaign,
                hot_conversions=h.conversions,
                lake_conversions=c.conversions,
                to_lake_conversions=None if coming is None else coming.conversions,
                hot_value=h.value,
                lake_value=c.value,
                to_lake_value=None if coming is None else coming.value,
                status="ok" if same else "DIFFERS",
            )
        )
        if not same:
            differences.append(
                f"campaign {campaign!r}: " + _difference(h, e, campaign in by_coming)
            )
    return rows, differences


def _difference(hot: ReportRow, expected: ReportRow, with_coming: bool) -> str:
    side = "lake + to_lake" if with_coming else "lake"
    parts = []
    if hot.conversions != expected.conversions:
        parts.append(f"conversions hot {hot.conversions}, {side} {expected.conversions}")
    for currency in sorted(hot.value.keys() | expected.value.keys()):
        hv, cv = hot.value.get(currency, 0), expected.value.get(currency, 0)
        if hv != cv:
            parts.append(
                f"value hot {format_money(hv, currency)}, {side} {format_money(cv, currency)}"
            )
    return "; ".join(parts)


def hot_totals(hot: HotStore, day: str) -> list[ReportRow]:
    return [
        ReportRow(str(t.campaign_id), t.conversions, dict(t.value))
        for t in hot.campaign_totals(day)
    ]


def lake_totals(lake: ColdStore, day: str) -> list[ReportRow]:
    try:
        con = connect(lake)
        try:
            return reports.conversions(con, "campaign_id", day, day)
        finally:
            con.close()
    except duckdb.Error as exc:
        raise StoreError(f"cannot read the lake: {str(exc).splitlines()[0]}") from exc


def _judged(flight: InFlight, settled: bool) -> bool:
    """Whether a difference between hot and lake + to_lake is real whatever is in flight.

    Events not yet counted will add to both sides alike, so they never explain
    one; what the lake has not read yet does unless it was read, and so do
    counted events the processed log lacks (a crash between counting and
    publishing), and reads of two different moments.
    """
    return (
        settled
        and (flight.to_lake is not None or not flight.not_in_lake)
        and not (flight.not_published)
    )


def _may_move(flight: InFlight, settled: bool, differences: list[str]) -> bool:
    """Whether events in flight may still change the day's numbers on either side."""
    if not settled:
        return True  # a stage moved while we read: the sides may be of different moments
    if flight.not_counted and flight.not_counted_dated != 0:
        return True  # accepted events of that day (or of unknown days) are still to count
    if flight.not_in_lake and flight.not_in_lake_dated != 0:
        return True  # counted events of that day (or of unknown days) are still to store
    # The counted-not-published stretch may be duplicates only: it matters only when
    # it could explain a difference.
    return bool(differences) and flight.not_published > 0


def judge(day: str, hot: list[ReportRow], lake: list[ReportRow], flight: InFlight,
          settled: bool) -> Result:  # fmt: skip
    rows, differences = compare(hot, lake, flight.to_lake)
    status: Status
    if differences and _judged(flight, settled):
        status = "differ"
        summary = (
            f"{len(differences)} campaign(s) differ, and nothing in flight explains it: a"
            " count went wrong, or data was removed on one side (see docs/operations.md)"
        )
    elif _may_move(flight, settled, differences):
        status = "behind"
        summary = (
            f"behind: {flight.total} event(s) in flight may still change {day};"
            " cannot judge yet: run again once the pipeline has caught up"
        )
    else:
        status = "agree" if rows else "empty"
        summary = (
            "no difference"
            if rows
            else f"no events on {day} in the counters or the lake: no conversions to compare"
        )
        if flight.total:
            summary += f" ({flight.total} event(s) in flight, none that can change {day})"
    return Result(
        date=day, status=status, exit_code=EXIT_CODES[status], campaigns=rows,
        differences=differences, in_flight=flight, settled=settled, summary=summary,
    )  # fmt: skip


def _flight_lines(flight: InFlight, day: str) -> list[str]:
    def of_day(dated: int | None) -> str:
        return f"{dated} of them dated {day}" if dated is not None else "their dates not read"

    lines = []
    if flight.not_counted:
        lines.append(
            f"  accepted, not yet counted by the processor: {flight.not_counted}"
            f" event(s) ({of_day(flight.not_counted_dated)})"
        )
    if flight.not_published:
        lines.append(
            f"  counted, not yet published by the processor: at most {flight.not_published}"
            " log entr(y/ies) (duplicates, or events it publishes when it resumes)"
        )
    if flight.not_in_lake and flight.to_lake is None:
        # Processed records not read: late copies (which the lake skips) count too.
        lines.append(
            f"  counted, not yet in the lake: at most {flight.not_in_lake} event(s)"
            " (processed records, late copies included; their dates not read)"
        )
    elif flight.not_in_lake:
        lines.append(
            f"  counted, not yet in the lake: {flight.not_in_lake} event(s)"
            f" ({of_day(flight.not_in_lake_dated)}; their conversions are the to_lake columns)"
        )
    return ["in flight:", *lines] if lines else []


def render_text(result: Result) -> str:
    lines = [f"date {result.date}: hot counters vs lake, per campaign"]
    table = [
        (r.campaign_id, r.hot_conversions, r.lake_conversions,
         "?" if r.to_lake_conversions is None else r.to_lake_conversions,
         _money(r.hot_value), _money(r.lake_value), _money(r.to_lake_value), r.status)
        for r in result.campaigns
    ]  # fmt: skip
    lines.append(render(COLUMNS, table, "table"))
    lines += _flight_lines(result.in_flight, result.date)
    if not result.settled:
        lines.append("the pipeline moved while reconcile read it")
    lines += result.differences
    lines.append(result.summary)
    return "\n".join(lines)


def _open_logs(settings: Settings, stack: ExitStack) -> tuple[EventLog, EventLog]:
    if settings.log.kind == "sqlite":
        for stream in ("events", "processed"):
            path = settings.data_dir / "log" / f"{stream}.db"
            if not path.is_file():
                raise StoreError(f"no event log at {path} (is --data-dir right?)")
    clock = SystemClock()
    events = open_log(settings, "events", clock)
    stack.callback(events.close)
    processed = open_log(settings, "processed", clock)
    stack.callback(processed.close)
    return events, processed


def reconcile(settings: Settings, day: str) -> Result:
    """Compare the day's hot counters with the lake, accounting for what is in flight."""
    path = settings.data_dir / "hot" / "hot.db"
    if settings.hot.kind == "sqlite" and not path.is_file():
        raise StoreError(f"no hot store at {path} (is --data-dir right?)")
    with ExitStack() as stack:
        hot = open_hot_store(settings)  # SQLite under the data dir, or Redis (hot.kind)
        stack.callback(hot.close)
        lake = open_lake(settings, create_bucket=False)
        events, processed = _open_logs(settings, stack)
        at: Positions = positions(events, processed, hot, lake)
        settled = False
        for _ in range(_ATTEMPTS):
            hot_rows, lake_rows = hot_totals(hot, day), lake_totals(lake, day)
            again = positions(events, processed, hot, lake)
            settled, at = again == at, again
            if settled:
                break
        # Only the embedded log is a local file that can be read through quickly.
        flight = in_flight(events, processed, at, day, readable=settings.log.kind == "sqlite")
        return judge(day, hot_rows, lake_rows, flight, settled)
