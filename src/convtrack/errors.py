"""The exception tree convtrack owns.

    ConvtrackError
    ├── ConfigError            a setting is unknown, malformed or inconsistent
    ├── LogError               the event log failed
    │   └── LogUnavailable     the log cannot take events durably right now (answer 503)
    └── StoreError             a store (rejects, hot, cold) failed
        └── StoreUnavailable   its backend (Redis) is unreachable now; retry later

Adapters translate library exceptions (sqlite3, OSError, ...) into these with
``raise ... from exc`` so callers never depend on a backend's error types.
Bad *input* is never an exception: validation returns typed outcomes with
stable codes (see ``convtrack.model.codes``).
"""

from __future__ import annotations


class ConvtrackError(Exception):
    """Base class of every error convtrack raises on purpose."""


class ConfigError(ConvtrackError):
    """A configuration file or environment variable is invalid."""


class LogError(ConvtrackError):
    """The event log failed."""


class LogUnavailable(LogError):
    """The log cannot take events durably right now; the client should retry."""

    def __init__(self, reason: str, retry_after_secs: int = 1) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after_secs = retry_after_secs


class StoreError(ConvtrackError):
    """A store failed to read or write."""


class StoreUnavailable(StoreError):
    """A store's backend cannot be reached right now; the same call may succeed later."""
