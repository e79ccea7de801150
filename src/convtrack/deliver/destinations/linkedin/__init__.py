"""LinkedIn Conversions API: batches of conversion events matched on hashed email or li_fat_id."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from convtrack.deliver.base import Destination, Forwarded, OutboundRequest, Outcome
from convtrack.deliver.destinations.base import DestinationKind
from convtrack.deliver.destinations.linkedin.config import LinkedInConfig
from convtrack.deliver.destinations.linkedin.request import MAX_ELEMENTS, build_request, user_ids
from convtrack.deliver.destinations.linkedin.response import read_response
from convtrack.deliver.destinations.linkedin.settings import LinkedInSettings
from convtrack.deliver.fields import too_old

__all__ = ["REGISTRATION", "LinkedInConfig", "LinkedInDestination", "create"]

TOO_OLD = "too_old"
NO_USER_IDENTIFIER = "no_user_identifier"


class LinkedInDestination(Destination):
    max_batch_events = MAX_ELEMENTS
    ad_platform = True
    dedupes_on_event_id = True  # LinkedIn keeps one conversion per eventId

    def __init__(self, config: LinkedInConfig) -> None:
        self.name = config.name
        self._config = config

    def skip_reason(self, event: Forwarded, now_us: int) -> str | None:
        if too_old(event.payload, now_us, self._config.window_us):
            return TOO_OLD
        if not user_ids(event.payload):  # LinkedIn cannot match it to a member
            return NO_USER_IDENTIFIER
        return None

    def build(self, events: Sequence[Forwarded], now_us: int) -> OutboundRequest:
        return build_request(self._config, events)

    def read(
        self, events: Sequence[Forwarded], status: int, headers: dict[str, str], body: bytes
    ) -> Outcome:
        return read_response(events, status, headers, body)


def create(settings: LinkedInSettings, environ: Mapping[str, str]) -> LinkedInDestination:
    return LinkedInDestination(LinkedInConfig.build(settings, environ))


REGISTRATION = DestinationKind(LinkedInSettings, create)
