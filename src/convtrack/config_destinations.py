"""The ``[[destinations]]`` tables: settings every destination shares, then each kind's own.

A table's ``kind`` picks its class; unknown keys of that kind are errors that
name the key. Credentials are never literal: each ``*_env`` names the
environment variable that holds the secret, read at start. ``endpoint``
overrides the platform's base URL (stand-ins, proxies, EU hosts); each API
version is a setting because every platform moves them on its own schedule.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

NonNegative = Annotated[float, msgspec.Meta(ge=0)]
Url = Annotated[str, msgspec.Meta(pattern="^https?://[^\\s]+$")]
OptionalUrl = Annotated[str, msgspec.Meta(pattern="^(https?://[^\\s]+)?$")]
EnvName = Annotated[str, msgspec.Meta(pattern="^[A-Za-z_][A-Za-z0-9_]*$")]


class DestinationBase(
    msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True, tag_field="kind"
):
    """What every destination has: naming, batching, retry, filters, mapping, safety."""

    name: Annotated[str, msgspec.Meta(pattern="^[a-z0-9_-]+$", max_length=64)]
    endpoint: OptionalUrl = ""
    # 0: the platform's own limit. Larger values are capped to the platform's limit.
    batch_max_events: Annotated[int, msgspec.Meta(ge=0, le=10_000)] = 0
    batch_max_wait_secs: NonNegative = 0.5
    timeout_secs: Annotated[float, msgspec.Meta(gt=0, le=120)] = 20.0
    max_attempts: Annotated[int, msgspec.Meta(ge=1, le=100)] = 8
    max_elapsed_secs: NonNegative = 3600.0
    retry_base_secs: Annotated[float, msgspec.Meta(gt=0)] = 1.0
    retry_cap_secs: Annotated[float, msgspec.Meta(gt=0)] = 600.0
    throttle_base_secs: Annotated[float, msgspec.Meta(gt=0)] = 5.0
    throttle_cap_secs: Annotated[float, msgspec.Meta(gt=0)] = 3600.0
    setup_pause_secs: Annotated[float, msgspec.Meta(gt=0)] = 300.0
    breaker_failure_ratio: Annotated[float, msgspec.Meta(gt=0, le=1)] = 0.5
    breaker_threshold: Annotated[int, msgspec.Meta(ge=1)] = 3
    breaker_cooldown_secs: Annotated[float, msgspec.Meta(gt=0)] = 60.0
    event_names: list[str] = msgspec.field(default_factory=list)
    min_value: int | None = None
    event_map: dict[str, str] = msgspec.field(default_factory=dict)
    allow_private_network: bool = False
    # Requests out at once; batches still commit in log order. 1 where a request
    # carries a whole batch; more where the platform takes one event per request.
    max_in_flight: Annotated[int, msgspec.Meta(ge=1, le=256)] = 1


class WebhookSettings(DestinationBase, tag="webhook", kw_only=True, frozen=True):
    endpoint: Url
    secret_env: EnvName
    batch_max_events: Annotated[int, msgspec.Meta(ge=0, le=10_000)] = 500
    batch_max_wait_secs: NonNegative = 5.0


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


class LinkedInSettings(DestinationBase, tag="linkedin", kw_only=True, frozen=True):
    conversion_rule_id: Annotated[str, msgspec.Meta(pattern="^[0-9]+$")]
    # Per event name, another conversion rule (our event_name -> rule id).
    conversion_rules: dict[str, Annotated[str, msgspec.Meta(pattern="^[0-9]+$")]] = msgspec.field(
        default_factory=dict
    )
    access_token_env: EnvName
    api_version: Annotated[str, msgspec.Meta(pattern="^[0-9]{6}$")] = "202603"
    window_days: Annotated[int, msgspec.Meta(ge=1, le=90)] = 90


class TikTokSettings(DestinationBase, tag="tiktok", kw_only=True, frozen=True):
    event_source: Literal["web", "app", "offline", "crm"] = "web"
    event_source_id: Annotated[str, msgspec.Meta(min_length=1)]
    access_token_env: EnvName
    api_version: Annotated[str, msgspec.Meta(pattern="^v[0-9]+\\.[0-9]+$")] = "v1.3"
    test_event_code: str = ""
    # TikTok's lateness window is not confirmed in our reference: 7 days by default.
    window_days: Annotated[int, msgspec.Meta(ge=1, le=365)] = 7


DestinationSettings = (
    WebhookSettings
    | SlackSettings
    | MetaCapiSettings
    | GoogleAdsSettings
    | Ga4Settings
    | LinkedInSettings
    | TikTokSettings
)
DESTINATION_KINDS: tuple[type[DestinationBase], ...] = (
    WebhookSettings,
    SlackSettings,
    MetaCapiSettings,
    GoogleAdsSettings,
    Ga4Settings,
    LinkedInSettings,
    TikTokSettings,
)
