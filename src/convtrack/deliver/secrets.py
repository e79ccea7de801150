"""Credentials named by environment variables, read once at start."""

from __future__ import annotations

from collections.abc import Mapping

from convtrack.errors import ConfigError


def read_secret(destination: str, env_name: str, environ: Mapping[str, str], what: str) -> str:
    """The value of ``env_name``; a missing or empty one stops the start naming the variable."""
    value = environ.get(env_name, "").strip()
    if not value:
        raise ConfigError(
            f"destination {destination}: environment variable {env_name} is not set "
            f"(it must hold {what})"
        )
    return value
