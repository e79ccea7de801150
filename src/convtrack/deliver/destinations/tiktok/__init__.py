"""The tiktok destination: TikTok Events API 2.0 (destinations.md §5)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from convtrack.deliver.base import Destination, Forwarded, OutboundRequest, Outcome
from convtrack.deliver.destinations.base import DestinationKind
from convtrack.deliver.destinations.tiktok.config import TikTokConfig
from convtrack.deliver.destinations.tiktok.request import build_request
from convtrack.deliver.destinations.tiktok.response import read_response
from convtrack.deliver.destinations.tiktok.settings import TikTokSettings
from convtrack.deliver.fields import too_old

__all__ = ["REGISTRATION", "TikTokConfig", "TikTokDestination", "create"]

MAX_EVENTS = 1000  # [S] Segment's and Tealium's connectors


class TikTokDestination(Destination):
    max_batch_events = MAX_EVENTS
    ad_platform = True
    dedupes_on_event_id = True  # event + event_id, 48 h

    def __init__(self, config: TikTokConfig) -> None:
        self.name = config.name
        self._config = config

    def skip_reason(self, event: Forwarded, now_us: int) -> str | None:
        if too_old(event.payload, now_us, self._config.window_us):
            return "too_old"
        return None

    def build(self, events: Sequence[Forwarded], now_us: int) -> OutboundRequest:
        return build_request(
            url=self._config.url,
            access_token=self._config.access_token,
            event_source=self._config.event_source,
            event_source_id=self._config.event_source_id,
            test_event_code=self._config.test_event_code,
            events=events,
        )

    def read(
        self, events: Sequence[Forwarded], status: int, headers: dict[str, str], body: bytes
    ) -> Outcome:
        return read_response(status, headers, body, secrets=(self._config.access_token,))


def create(settings: TikTokSettings, environ: Mapping[str, str]) -> TikTokDestination:
    return TikTokDestination(TikTokConfig.build(settings, environ))


REGISTRATION = DestinationKind(TikTokSettings, create)
