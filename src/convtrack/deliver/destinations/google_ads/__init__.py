"""Google Ads offline click conversions: the Data Manager API or uploadClickConversions.

``api = "data_manager"`` (the default) posts to events:ingest, Google's path
for new integrations; ``api = "click_upload"`` posts to
``customers/{id}:uploadClickConversions``, open only to accounts allowlisted
before 2026-06-15 (destinations.md section 2).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from convtrack.deliver.base import Destination, Forwarded, OutboundRequest, Outcome
from convtrack.deliver.destinations.base import DestinationKind
from convtrack.deliver.destinations.google_ads.config import GoogleAdsConfig
from convtrack.deliver.destinations.google_ads.request import (
    MAX_CONVERSIONS,
    build_click_upload,
    build_data_manager,
    click_id,
    hashed_contacts,
)
from convtrack.deliver.destinations.google_ads.response import read_click_upload, read_data_manager
from convtrack.deliver.destinations.google_ads.settings import GoogleAdsSettings
from convtrack.deliver.fields import DAY_US, too_old

__all__ = ["REGISTRATION", "GoogleAdsConfig", "GoogleAdsDestination", "create"]


# uploadClickConversions answers with a result or an error per row (up to ~300 bytes
# each): 100 rows keep the answer well inside the runner's 64 KiB answer cap, so
# partial failures can always be read. events:ingest answers only a request id.
CLICK_UPLOAD_BATCH = 100


class GoogleAdsDestination(Destination):
    max_batch_events = MAX_CONVERSIONS
    ad_platform = True
    dedupes_on_event_id = True  # orderId per conversion action; transactionId

    def __init__(self, config: GoogleAdsConfig) -> None:
        self.name = config.name
        self.config = config
        if config.api == "click_upload":
            self.max_batch_events = CLICK_UPLOAD_BATCH

    def skip_reason(self, event: Forwarded, now_us: int) -> str | None:
        payload = event.payload
        if too_old(payload, now_us, self.config.click_window_days * DAY_US):
            return "too_old"  # outside the conversion action's click-through window
        if click_id(payload) is None and not hashed_contacts(payload, self.config.email_key):
            return "no_click_id"
        return None

    def build(self, events: Sequence[Forwarded], now_us: int) -> OutboundRequest:
        if self.config.api == "click_upload":
            return build_click_upload(self.config, events)
        return build_data_manager(self.config, events)

    def read(
        self, events: Sequence[Forwarded], status: int, headers: dict[str, str], body: bytes
    ) -> Outcome:
        if self.config.api == "click_upload":
            return read_click_upload(events, status, headers, body)
        return read_data_manager(events, status, headers, body)


def create(settings: GoogleAdsSettings, environ: Mapping[str, str]) -> GoogleAdsDestination:
    return GoogleAdsDestination(GoogleAdsConfig.build(settings, environ))


REGISTRATION = DestinationKind(GoogleAdsSettings, create)
