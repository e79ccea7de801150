"""The ``[[destinations]]`` table of kind ``webhook``: signed webhooks."""

from __future__ import annotations

from typing import Annotated

import msgspec

from convtrack.deliver.destinations.base import DestinationBase, EnvName, NonNegative, Url


class WebhookSettings(DestinationBase, tag="webhook", kw_only=True, frozen=True):
    endpoint: Url
    secret_env: EnvName
    batch_max_events: Annotated[int, msgspec.Meta(ge=0, le=10_000)] = 500
    batch_max_wait_secs: NonNegative = 5.0
