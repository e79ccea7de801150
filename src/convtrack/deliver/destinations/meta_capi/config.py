"""Meta CAPI options: the settings table plus the access token read from the environment."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from convtrack.deliver.destinations.meta_capi.settings import MetaCapiSettings
from convtrack.deliver.fields import DAY_US
from convtrack.deliver.secrets import read_secret

DEFAULT_BASE_URL = "https://graph.facebook.com"
# An event this close to the window's edge is left out: it could age past the
# edge before Meta reads it, and one stale event fails the whole request.
WINDOW_MARGIN_US = 5 * 60 * 1_000_000


@dataclass(frozen=True)
class MetaCapiConfig:
    name: str
    url: str
    access_token: str = field(repr=False)
    action_source: str
    test_event_code: str
    window_days: int

    @property
    def window_us(self) -> int:
        return self.window_days * DAY_US - WINDOW_MARGIN_US

    @classmethod
    def build(cls, settings: MetaCapiSettings, environ: Mapping[str, str]) -> MetaCapiConfig:
        token = read_secret(
            settings.name, settings.access_token_env, environ, "the Meta Conversions API token"
        )
        base = (settings.endpoint or DEFAULT_BASE_URL).rstrip("/")
        return cls(
            name=settings.name,
            # The token travels in the body, never in the URL: URLs end up in
            # error texts and logs.
            url=f"{base}/{settings.api_version}/{settings.pixel_id}/events",
            access_token=token,
            action_source=settings.action_source,
            test_event_code=settings.test_event_code,
            window_days=settings.window_days,
        )
