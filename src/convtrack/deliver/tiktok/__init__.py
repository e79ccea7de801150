"""The tiktok destination (being built: see issue 6)."""

from __future__ import annotations

from collections.abc import Mapping

from convtrack.config_destinations import TikTokSettings
from convtrack.deliver.base import Destination
from convtrack.errors import ConfigError


def create(settings: TikTokSettings, environ: Mapping[str, str]) -> Destination:
    raise ConfigError(f"destination {settings.name}: kind tiktok is not built yet")
