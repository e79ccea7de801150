"""LinkedIn options: the settings table plus the OAuth token read from the environment."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from convtrack.deliver.destinations.linkedin.settings import LinkedInSettings
from convtrack.deliver.fields import DAY_US
from convtrack.deliver.secrets import read_secret

DEFAULT_BASE_URL = "https://api.linkedin.com"
PATH = "/rest/conversionEvents"


@dataclass(frozen=True)
class LinkedInConfig:
    name: str
    url: str
    access_token: str
    api_version: str
    conversion_rule_id: str
    # Our event name (as it arrived) -> another conversion rule id.
    conversion_rules: dict[str, str] = field(default_factory=dict)
    window_days: int = 90

    @property
    def window_us(self) -> int:
        return self.window_days * DAY_US

    def rule_for(self, source_event_name: str) -> str:
        return self.conversion_rules.get(source_event_name, self.conversion_rule_id)

    @classmethod
    def build(cls, settings: LinkedInSettings, environ: Mapping[str, str]) -> LinkedInConfig:
        token = read_secret(
            settings.name, settings.access_token_env, environ, "a LinkedIn OAuth access token"
        )
        base = (settings.endpoint or DEFAULT_BASE_URL).rstrip("/")
        return cls(
            name=settings.name,
            url=base + PATH,
            access_token=token,
            api_version=settings.api_version,
            conversion_rule_id=settings.conversion_rule_id,
            conversion_rules=dict(settings.conversion_rules),
            window_days=settings.window_days,
        )
