"""The meta_capi destination: Meta Conversions API (destinations.md §1)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from convtrack.deliver.base import Destination, Forwarded, OutboundRequest, Outcome
from convtrack.deliver.destinations.base import DestinationKind
from convtrack.deliver.destinations.meta_capi.config import MetaCapiConfig
from convtrack.deliver.destinations.meta_capi.request import build_request, user_data
from convtrack.deliver.destinations.meta_capi.response import read_response
from convtrack.deliver.destinations.meta_capi.settings import MetaCapiSettings
from convtrack.deliver.fields import too_old

__all__ = ["REGISTRATION", "MetaCapiConfig", "MetaCapiDestination", "create"]

MAX_EVENTS = 1000


class MetaCapiDestination(Destination):
    max_batch_events = MAX_EVENTS
    ad_platform = True
    dedupes_on_event_id = True  # event_name + event_id, 48 h

    def __init__(self, config: MetaCapiConfig) -> None:
        self.name = config.name
        self._config = config

    def skip_reason(self, event: Forwarded, now_us: int) -> str | None:
        """Meta refuses the whole request for one such event, so none is sent."""
        payload = event.payload
        if too_old(payload, now_us, self._config.window_us):
            return "too_old"
        if self._config.action_source == "website":
            if not payload.page_url:
                return "no_page_url"  # event_source_url is required for website events
            if not payload.user_agent:
                return "no_user_agent"  # client_user_agent is required for website events
        if payload.event_name == "Purchase" and (payload.amount is None or not payload.currency):
            return "no_value"
        if not user_data(payload):
            return "no_user_data"
        return None

    def build(self, events: Sequence[Forwarded], now_us: int) -> OutboundRequest:
        return build_request(
            url=self._config.url,
            access_token=self._config.access_token,
            action_source=self._config.action_source,
            test_event_code=self._config.test_event_code,
            events=events,
        )

    def read(
        self, events: Sequence[Forwarded], status: int, headers: dict[str, str], body: bytes
    ) -> Outcome:
        return read_response(
            status, headers, body, sent=len(events), secrets=(self._config.access_token,)
        )


def create(settings: MetaCapiSettings, environ: Mapping[str, str]) -> MetaCapiDestination:
    return MetaCapiDestination(MetaCapiConfig.build(settings, environ))


REGISTRATION = DestinationKind(MetaCapiSettings, create)
