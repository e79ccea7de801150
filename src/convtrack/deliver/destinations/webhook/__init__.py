"""Our own outgoing webhook: a JSON batch signed the Standard Webhooks way."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from convtrack.deliver.base import Destination, Forwarded, OutboundRequest, Outcome
from convtrack.deliver.destinations.base import DestinationKind
from convtrack.deliver.destinations.webhook.config import WebhookConfig
from convtrack.deliver.destinations.webhook.request import build_request
from convtrack.deliver.destinations.webhook.response import read_response
from convtrack.deliver.destinations.webhook.settings import WebhookSettings

__all__ = ["REGISTRATION", "WebhookConfig", "WebhookDestination", "create"]


class WebhookDestination(Destination):
    max_batch_events = 10_000
    ad_platform = False
    dedupes_on_event_id = True  # receivers dedupe on webhook-id, stable across retries

    def __init__(self, config: WebhookConfig) -> None:
        self.name = config.name
        self._config = config

    def build(self, events: Sequence[Forwarded], now_us: int) -> OutboundRequest:
        return build_request(
            destination=self.name,
            endpoint=self._config.endpoint,
            secret=self._config.secret,
            events=events,
            now_us=now_us,
        )

    def read(
        self, events: Sequence[Forwarded], status: int, headers: dict[str, str], body: bytes
    ) -> Outcome:
        return read_response(status, headers, body)


def create(settings: WebhookSettings, environ: Mapping[str, str]) -> WebhookDestination:
    return WebhookDestination(WebhookConfig.build(settings, environ))


REGISTRATION = DestinationKind(WebhookSettings, create)
