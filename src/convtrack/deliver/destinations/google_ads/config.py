"""Google Ads options: the settings table plus the OAuth credentials from the environment."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from convtrack.deliver.destinations.google_ads.settings import GoogleAdsSettings
from convtrack.deliver.secrets import read_secret
from convtrack.errors import ConfigError

GOOGLE_ADS_BASE_URL = "https://googleads.googleapis.com"
DATA_MANAGER_BASE_URL = "https://datamanager.googleapis.com"
# The Data Manager API takes at most 10 destinations (conversion actions) per request.
MAX_DATA_MANAGER_DESTINATIONS = 10


@dataclass(frozen=True)
class GoogleAdsConfig:
    name: str
    api: str  # "data_manager" or "click_upload"
    base_url: str
    api_version: str
    data_manager_version: str
    customer_id: str
    login_customer_id: str
    conversion_action_id: str
    conversion_actions: dict[str, str] = field(default_factory=dict)
    access_token: str = ""
    developer_token: str = ""
    click_window_days: int = 30
    # The payload.user key of the hashed email to send (the Gmail rule variant).
    email_key: str = "email_google"

    def action_for(self, source_event_name: str) -> str:
        return self.conversion_actions.get(source_event_name, self.conversion_action_id)

    @classmethod
    def build(cls, settings: GoogleAdsSettings, environ: Mapping[str, str]) -> GoogleAdsConfig:
        for event_name, action in settings.conversion_actions.items():
            if not action.isdigit():
                raise ConfigError(
                    f"destination {settings.name}: conversion_actions.{event_name} must be a "
                    f"numeric conversion action id, not {action!r}"
                )
        actions = {settings.conversion_action_id, *settings.conversion_actions.values()}
        if settings.api == "data_manager" and len(actions) > MAX_DATA_MANAGER_DESTINATIONS:
            raise ConfigError(
                f"destination {settings.name}: the Data Manager API takes at most "
                f"{MAX_DATA_MANAGER_DESTINATIONS} conversion actions per request "
                f"(conversion_action_id and conversion_actions name {len(actions)})"
            )
        token = read_secret(settings.name, settings.access_token_env, environ,
                            "a Google OAuth access token")  # fmt: skip
        developer_token = ""
        if settings.developer_token_env:
            developer_token = read_secret(settings.name, settings.developer_token_env, environ,
                                          "a Google Ads developer token")  # fmt: skip
        default_base = DATA_MANAGER_BASE_URL if settings.api == "data_manager" else (
            GOOGLE_ADS_BASE_URL
        )  # fmt: skip
        return cls(
            name=settings.name,
            api=settings.api,
            base_url=(settings.endpoint or default_base).rstrip("/"),
            api_version=settings.api_version,
            data_manager_version=settings.data_manager_version,
            customer_id=settings.customer_id,
            login_customer_id=settings.login_customer_id,
            conversion_action_id=settings.conversion_action_id,
            conversion_actions=dict(settings.conversion_actions),
            access_token=token,
            developer_token=developer_token,
            click_window_days=settings.click_window_days,
            email_key="email_google_sdk" if settings.gmail_rule == "sdk" else "email_google",
        )
