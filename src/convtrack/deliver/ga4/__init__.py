"""The ga4 destination (being built: see issue 6)."""

from __future__ import annotations

from collections.abc import Mapping

from convtrack.config_destinations import Ga4Settings
from convtrack.deliver.base import Destination
from convtrack.errors import ConfigError


def create(settings: Ga4Settings, environ: Mapping[str, str]) -> Destination:
    raise ConfigError(f"destination {settings.name}: kind ga4 is not built yet")
