"""The meta_capi destination (being built: see issue 6)."""

from __future__ import annotations

from collections.abc import Mapping

from convtrack.config_destinations import MetaCapiSettings
from convtrack.deliver.base import Destination
from convtrack.errors import ConfigError


def create(settings: MetaCapiSettings, environ: Mapping[str, str]) -> Destination:
    raise ConfigError(f"destination {settings.name}: kind meta_capi is not built yet")
