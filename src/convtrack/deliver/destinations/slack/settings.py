"""The ``[[destinations]]`` table of kind ``slack``: Slack messages."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from convtrack.deliver.destinations.base import DestinationBase, EnvName, NonNegative


class SlackSettings(DestinationBase, tag="slack", kw_only=True, frozen=True):
    # Slack's incoming-webhook URL is itself the secret.
    webhook_url_env: EnvName
    message_per: Literal["conversion", "batch"] = "batch"
    alerts: bool = True
    min_interval_secs: NonNegative = 1.0
    # A batch message lists at most this many conversions, then "…and N more".
    max_lines: Annotated[int, msgspec.Meta(ge=1, le=40)] = 10
    batch_max_events: Annotated[int, msgspec.Meta(ge=0, le=10_000)] = 20
    batch_max_wait_secs: NonNegative = 5.0
