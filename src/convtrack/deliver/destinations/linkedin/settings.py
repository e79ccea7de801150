"""The ``[[destinations]]`` table of kind ``linkedin``: LinkedIn Conversions API."""

from __future__ import annotations

from typing import Annotated

import msgspec

from convtrack.deliver.destinations.base import DestinationBase, EnvName


class LinkedInSettings(DestinationBase, tag="linkedin", kw_only=True, frozen=True):
    conversion_rule_id: Annotated[str, msgspec.Meta(pattern="^[0-9]+$")]
    # Per event name, another conversion rule (our event_name -> rule id).
    conversion_rules: dict[str, Annotated[str, msgspec.Meta(pattern="^[0-9]+$")]] = msgspec.field(
        default_factory=dict
    )
    access_token_env: EnvName
    api_version: Annotated[str, msgspec.Meta(pattern="^[0-9]{6}$")] = "202603"
    window_days: Annotated[int, msgspec.Meta(ge=1, le=90)] = 90
