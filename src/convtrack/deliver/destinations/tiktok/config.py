"""TikTok Events API options: the settings table plus the access token from the environment."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from convtrack.deliver.destinations.tiktok.settings import TikTokSettings
from convtrack.deliver.fields import DAY_US
from convtrack.deliver.secrets import read_secret

DEFAULT_BASE_URL = "https://business-api.tiktok.com"
# Events this close to the window's edge are left out: they could age past it
# before TikTok reads them.
WINDOW_MARGIN_US = 5 * 60 * 1_000_000


@dataclass(frozen=True)
class TikTokConfig:
    name: str
    url: str
    access_token: str = field(repr=False)
    event_source: str
    event_source_id: str
    test_event_code: str
    window_days: int

    @property
    def window_us(self) -> int:
        return self.window_days * DAY_US - WINDOW_MARGIN_US

    @classmethod
    def build(cls, settings: TikTokSettings, environ: Mapping[str, str]) -> TikTokConfig:
        token = read_secret(
            settings.name, settings.access_token_env, environ, "the TikTok Events API token"
        )
        base = (settings.endpoint or DEFAULT_BASE_URL).rstrip("/")
        return cls(
            name=settings.name,
            # TikTok's path keeps its trailing slash.
            url=f"{base}/open_api/{settings.api_version}/event/track/",
            access_token=token,
            event_source=settings.event_source,
            event_source_id=settings.event_source_id,
            test_event_code=settings.test_event_code,
            window_days=settings.window_days,
        )
