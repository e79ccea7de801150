"""The ``[[destinations]]`` table of kind ``ga4``: GA4 Measurement Protocol."""

from __future__ import annotations

from typing import Annotated

import msgspec

from convtrack.deliver.destinations.base import DestinationBase, EnvName


class Ga4Settings(DestinationBase, tag="ga4", kw_only=True, frozen=True):
    # Exactly one: a web stream's measurement id (G-...) or an app stream's Firebase app id.
    measurement_id: str = ""
    firebase_app_id: str = ""
    api_secret_env: EnvName
    window_hours: Annotated[int, msgspec.Meta(ge=1, le=72)] = 72
    # Sent as engagement_time_msec with each event (GA4 needs it for Realtime and sessions).
    engagement_time_msec: Annotated[int, msgspec.Meta(ge=1)] = 100
    # One event per request at 200-800 ms each: one at a time would do 1-5 events/s.
    max_in_flight: Annotated[int, msgspec.Meta(ge=1, le=256)] = 32
