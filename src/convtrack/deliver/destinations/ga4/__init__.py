"""GA4 Measurement Protocol: one event per request (a request names one client).

GA4 does not deduplicate what we send (``dedupes_on_event_id = False``): a
batch whose send a crash interrupted is dead-lettered for review, not resent.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from convtrack.deliver.base import Destination, Forwarded, OutboundRequest, Outcome
from convtrack.deliver.destinations.base import DestinationKind
from convtrack.deliver.destinations.ga4.config import Ga4Config
from convtrack.deliver.destinations.ga4.request import (
    app_instance_id,
    build_request,
    event_name,
    is_reserved,
)
from convtrack.deliver.destinations.ga4.response import read_response
from convtrack.deliver.destinations.ga4.settings import Ga4Settings
from convtrack.deliver.fields import HOUR_US, too_old

__all__ = ["REGISTRATION", "Ga4Config", "Ga4Destination", "create"]


class Ga4Destination(Destination):
    # GA4 takes 25 events per request, but all for one client: events of different
    # users cannot share a request, so each event is its own request.
    max_batch_events = 1
    ad_platform = True  # Google's ads features read it; ad_user_data false keeps it out
    dedupes_on_event_id = False

    def __init__(self, config: Ga4Config) -> None:
        self.name = config.name
        self.config = config

    def skip_reason(self, event: Forwarded, now_us: int) -> str | None:
        payload = event.payload
        if too_old(payload, now_us, self.config.window_hours * HOUR_US):
            return "too_old"
        if not payload.consent.analytics:
            return "no_analytics_consent"
        name = event_name(payload)
        if is_reserved(payload.event_name.strip()) or is_reserved(name):
            return "reserved_name"
        if not name:
            return "invalid_name"
        if self.config.app_stream and app_instance_id(payload) is None:
            return "no_app_instance_id"
        return None

    def build(self, events: Sequence[Forwarded], now_us: int) -> OutboundRequest:
        return build_request(self.config, events)

    def read(
        self, events: Sequence[Forwarded], status: int, headers: dict[str, str], body: bytes
    ) -> Outcome:
        return read_response(status, headers, body)


def create(settings: Ga4Settings, environ: Mapping[str, str]) -> Ga4Destination:
    return Ga4Destination(Ga4Config.build(settings, environ))


REGISTRATION = DestinationKind(Ga4Settings, create)
