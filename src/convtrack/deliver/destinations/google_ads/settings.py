"""The ``[[destinations]]`` table of kind ``google_ads``: Google Ads."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from convtrack.deliver.destinations.base import DestinationBase, EnvName, NonNegative


class GoogleAdsSettings(DestinationBase, tag="google_ads", kw_only=True, frozen=True):
    # data_manager: the Data Manager API (events:ingest), for new setups;
    # click_upload: uploadClickConversions, only for accounts already allowlisted.
    api: Literal["data_manager", "click_upload"] = "data_manager"
    customer_id: Annotated[str, msgspec.Meta(pattern="^[0-9]{10}$")]
    conversion_action_id: Annotated[str, msgspec.Meta(pattern="^[0-9]+$")]
    # Per event name, another conversion action (our event_name -> action id).
    conversion_actions: dict[str, str] = msgspec.field(default_factory=dict)
    login_customer_id: Annotated[str, msgspec.Meta(pattern="^([0-9]{10})?$")] = ""
    access_token_env: EnvName
    # Optional: Google ignores the developer-token header since 2026-09-09.
    developer_token_env: Annotated[str, msgspec.Meta(pattern="^([A-Za-z_][A-Za-z0-9_]*)?$")] = ""
    api_version: Annotated[str, msgspec.Meta(pattern="^v[0-9]+(\\.[0-9]+)?$")] = "v26"
    data_manager_version: Annotated[str, msgspec.Meta(pattern="^v[0-9]+$")] = "v1"
    # The conversion action's click-through window (Google: 30 days by default, up to 90).
    click_window_days: Annotated[int, msgspec.Meta(ge=1, le=90)] = 30
    # documented: Gmail-only dot removal; sdk: google-ads-python's every '.' and '+'.
    gmail_rule: Literal["documented", "sdk"] = "documented"
    # Clicks younger than 6 h are answered TOO_RECENT_EVENT and retried 6 h later,
    # so a batch must be allowed to live longer than the common default (1 h).
    max_elapsed_secs: NonNegative = 86_400.0
