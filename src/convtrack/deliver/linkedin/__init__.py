"""The linkedin destination (being built: see issue 6)."""

from __future__ import annotations

from collections.abc import Mapping

from convtrack.config_destinations import LinkedInSettings
from convtrack.deliver.base import Destination
from convtrack.errors import ConfigError


def create(settings: LinkedInSettings, environ: Mapping[str, str]) -> Destination:
    raise ConfigError(f"destination {settings.name}: kind linkedin is not built yet")
