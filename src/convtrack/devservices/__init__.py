"""Real services for development and tests, run as local child processes on 127.0.0.1."""

from __future__ import annotations

from convtrack.devservices.seaweed import (
    DevServiceError,
    SeaweedS3,
    WeedNotFoundError,
    find_weed,
)

__all__ = ["DevServiceError", "SeaweedS3", "WeedNotFoundError", "find_weed"]
