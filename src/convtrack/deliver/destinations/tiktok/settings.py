"""The ``[[destinations]]`` table of kind ``tiktok``: TikTok Events API."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from convtrack.deliver.destinations.base import DestinationBase, EnvName


class TikTokSettings(DestinationBase, tag="tiktok", kw_only=True, frozen=True):
    event_source: Literal["web", "app", "offline", "crm"] = "web"
    event_source_id: Annotated[str, msgspec.Meta(min_length=1)]
    access_token_env: EnvName
    api_version: Annotated[str, msgspec.Meta(pattern="^v[0-9]+\\.[0-9]+$")] = "v1.3"
    test_event_code: str = ""
    # TikTok's lateness window is not confirmed in our reference: 7 days by default.
    window_days: Annotated[int, msgspec.Meta(ge=1, le=365)] = 7
