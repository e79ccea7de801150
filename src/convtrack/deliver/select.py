"""Which processed events a destination gets, in order: filters, consent, the platform's rules."""

from __future__ import annotations

from convtrack.deliver.base import Destination, Forwarded
from convtrack.deliver.destinations import DestinationSettings
from convtrack.deliver.payload import forward_payload
from convtrack.log.base import LogEntry
from convtrack.log.published import NOTHING_READ, FirstCopies
from convtrack.model.processed import ProcessedEvent

CONSENT = "consent"
FILTERED = "filtered"
LATE_COPY = "late_copy"


def filter_reason(settings: DestinationSettings, processed: ProcessedEvent) -> str | None:
    """None when the destination wants the event: a conversion (never a bot) that passes
    its ``event_names`` and ``min_value``. Non-conversions are ``not_conversion``/``bot``."""
    if processed.is_bot:
        return "bot"
    if not processed.is_conversion:
        return "not_conversion"
    event = processed.event
    if settings.event_names and event.event_name not in settings.event_names:
        return FILTERED
    if settings.min_value is not None and (event.value is None or event.value < settings.min_value):
        return FILTERED
    return None


def wanted(settings: DestinationSettings, processed: ProcessedEvent) -> bool:
    return filter_reason(settings, processed) is None


class Selector:
    """Turns a processed-log entry into what one destination sends, or why it does not."""

    def __init__(
        self, destination: Destination, settings: DestinationSettings, *, default_granted: bool
    ) -> None:
        self._destination = destination
        self._settings = settings
        self._default_granted = default_granted
        self._copies = FirstCopies()
        self._last_offsets: dict[int, int] = {}

    def _late_copy(self, entry: LogEntry, processed: ProcessedEvent) -> bool:
        """The processed log's read rule (``log/published.py``): a second copy of a
        source event that two processors both published is not sent again.

        The rule only compares a record with those read before it without a gap, so a
        partition read again from an earlier offset (a rewind, a rebalance, a restart)
        starts afresh: a first copy is never dropped, and at worst a copy whose first
        was read before that point goes out once more (the platforms dedupe on our id).
        """
        last = self._last_offsets.get(entry.partition)
        if last is None or entry.offset != last + 1:
            self._copies.reset(entry.partition, NOTHING_READ)
        self._last_offsets[entry.partition] = entry.offset
        return not self._copies.keep(entry.partition, processed)

    def select(
        self, entry: LogEntry, processed: ProcessedEvent, now_us: int
    ) -> Forwarded | str | None:
        """The event to send; a skip reason to count (``filtered``, ``consent``, the
        platform's own); or None for what is never meant for destinations."""
        if self._late_copy(entry, processed):
            return LATE_COPY
        return self.select_again(entry, processed, now_us)

    def select_again(
        self, entry: LogEntry, processed: ProcessedEvent, now_us: int
    ) -> Forwarded | str | None:
        """``select`` without the copy rule: for an entry read before (a quarantine replay)."""
        reason = filter_reason(self._settings, processed)
        if reason is not None:
            return reason if reason == FILTERED else None
        event = Forwarded(
            event_id=processed.event.event_id,
            source_partition=entry.partition,
            source_offset=entry.offset,
            payload=forward_payload(
                processed,
                event_map=self._settings.event_map,
                default_granted=self._default_granted,
            ),
        )
        if self._destination.ad_platform and not event.payload.consent.ad_user_data:
            return CONSENT
        return self._destination.skip_reason(event, now_us) or event
