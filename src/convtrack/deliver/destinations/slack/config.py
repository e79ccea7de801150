"""Slack options: the settings table plus the incoming-webhook URL read from the environment.

The URL is the secret (it carries the token), so it is never logged and never
put in an error message; only the variable's name is.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from convtrack.deliver.destinations.slack.settings import SlackSettings
from convtrack.errors import ConfigError

_HTTPS_URL = re.compile(r"^https://[^\s/]+/\S*$")


@dataclass(frozen=True)
class SlackConfig:
    name: str
    url: str
    message_per: str
    alerts: bool
    min_interval_secs: float
    max_lines: int

    def __repr__(self) -> str:  # the URL is a secret
        return f"SlackConfig(name={self.name!r}, message_per={self.message_per!r})"

    @classmethod
    def build(cls, settings: SlackSettings, environ: Mapping[str, str]) -> SlackConfig:
        return cls(
            name=settings.name,
            url=webhook_url(settings, environ),
            message_per=settings.message_per,
            alerts=settings.alerts,
            min_interval_secs=settings.min_interval_secs,
            max_lines=settings.max_lines,
        )


def webhook_url(settings: SlackSettings, environ: Mapping[str, str]) -> str:
    """``endpoint`` when set (a stand-in or a relay, not a secret), else the variable's URL."""
    if settings.endpoint:
        return settings.endpoint
    env = settings.webhook_url_env
    url = environ.get(env, "").strip()
    if not url:
        raise ConfigError(
            f"destination {settings.name}: environment variable {env} is not set "
            "(it must hold the Slack incoming-webhook URL)"
        )
    if not _HTTPS_URL.fullmatch(url):
        raise ConfigError(
            f"destination {settings.name}: environment variable {env} does not hold "
            "an https:// URL (the Slack incoming-webhook URL)"
        )
    return url
