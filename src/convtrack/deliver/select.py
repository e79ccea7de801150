"""Which processed events a destination gets, in order: filters, consent, the platform's rules."""

from __future__ import annotations

from convtrack.config_destinations import DestinationSettings
from convtrack.deliver.base import Destination, Forwarded
from convtrack.deliver.payload import forward_payload
from convtrack.log.base import LogEntry
from convtrack.model.processed import ProcessedEvent

CONSENT = "consent"
FILTERED = "filtered"


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

    def select(
        self, entry: LogEntry, processed: ProcessedEvent, now_us: int
    ) -> Forwarded | str | None:
        """The event to send; a skip reason to count (``filtered``, ``consent``, the
        platform's own); or None for what is never meant for destinations."""
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
        if self._destination.ad_platform and not event.payload["consent"]["ad_user_data"]:
            return CONSENT
        return self._destination.skip_reason(event, now_us) or event
