"""The google_ads destination (being built: see issue 6)."""

from __future__ import annotations

from collections.abc import Mapping

from convtrack.config_destinations import GoogleAdsSettings
from convtrack.deliver.base import Destination
from convtrack.errors import ConfigError


def create(settings: GoogleAdsSettings, environ: Mapping[str, str]) -> Destination:
    raise ConfigError(
        f"destination {settings.name}: kind google_ads is not available in this build"
    )
