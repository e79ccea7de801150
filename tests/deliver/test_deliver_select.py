"""The processed log's read rule in delivery: a late second copy of a source event (two
processors briefly owning one partition) is not sent again, and a first copy never dropped."""

from __future__ import annotations

from collections.abc import Sequence

from convtrack.config import load_settings
from convtrack.deliver.base import Delivered, Destination, Forwarded, OutboundRequest, Outcome
from convtrack.deliver.select import LATE_COPY, Selector
from convtrack.log.base import LogEntry
from convtrack.model.event import Envelope
from convtrack.model.processed import ProcessedEvent, encode_processed


class Anything(Destination):
    name = "any"
    ad_platform = False

    def build(self, events: Sequence[Forwarded], now_us: int) -> OutboundRequest:
        return OutboundRequest(method="POST", url="http://127.0.0.1:9/", headers={}, body=b"")

    def read(
        self, events: Sequence[Forwarded], status: int, headers: dict[str, str], body: bytes
    ) -> Outcome:
        return Delivered()


def entry(offset: int, source_offset: int) -> tuple[LogEntry, ProcessedEvent]:
    event = Envelope(event_id=f"e{source_offset}", source="default", event_name="Purchase",
                     event_time_us=1, received_at_us=1)  # fmt: skip
    processed = ProcessedEvent(event=event, source_partition=0, source_offset=source_offset,
                               campaign_id="c", event_date="2026-01-01", is_conversion=True,
                               logged_at_us=1, processed_at_us=1, counted_at_us=1)  # fmt: skip
    return LogEntry(0, offset, "k", encode_processed(processed), 1), processed


def selector() -> Selector:
    table = {"kind": "webhook", "name": "any", "endpoint": "http://x/", "secret_env": "S"}
    settings = load_settings(environ={}, overrides={"destinations": [table]}).destinations[0]
    return Selector(Anything(), settings, default_granted=True)


def sent(chosen: Forwarded | str | None) -> str | None:
    return chosen.event_id if isinstance(chosen, Forwarded) else chosen


def test_a_late_copy_is_not_sent_again() -> None:
    select = selector()
    # Processed offsets 0..4 hold source offsets 10, 11, 12, then a late 11, then 13.
    outcomes = [sent(select.select(*entry(i, s), 0)) for i, s in enumerate([10, 11, 12, 11, 13])]
    assert outcomes == ["e10", "e11", "e12", LATE_COPY, "e13"]


def test_a_partition_read_again_from_earlier_keeps_its_first_copies() -> None:
    select = selector()
    for i, s in enumerate([10, 11, 12]):
        select.select(*entry(i, s), 0)
    # A rewind (an error, a rebalance) reads offsets 1 and 2 again: they must go out.
    assert [sent(select.select(*entry(i, s), 0)) for i, s in [(1, 11), (2, 12)]] == ["e11", "e12"]
