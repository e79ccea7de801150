"""The ``[[destinations]]`` table of kind ``meta_capi``: Meta Conversions API."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from convtrack.deliver.destinations.base import DestinationBase, EnvName


class MetaCapiSettings(DestinationBase, tag="meta_capi", kw_only=True, frozen=True):
    pixel_id: Annotated[str, msgspec.Meta(pattern="^[0-9]+$")]
    access_token_env: EnvName
    # Graph API version, e.g. "v26.0"; each stays supported for at least two years.
    api_version: Annotated[str, msgspec.Meta(pattern="^v[0-9]+\\.[0-9]+$")] = "v26.0"
    action_source: Literal[
        "website", "app", "email", "phone_call", "chat", "physical_store",
        "system_generated", "business_messaging", "other",
    ] = "website"  # fmt: skip
    test_event_code: str = ""
    window_days: Annotated[int, msgspec.Meta(ge=1, le=7)] = 7
