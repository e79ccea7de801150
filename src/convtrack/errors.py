"""The exception tree convtrack owns.

    ConvtrackError
    ├── ConfigError            a setting is unknown, malformed or inconsistent
    ├── MissingDependency      an optional dependency (a package extra) is not installed
    ├── LogError               the event log failed
    │   └── LogUnavailable     the log cannot take events durably right now (answer 503)
    ├── StoreError             a store (rejects, hot, cold) failed
    │   └── StoreUnavailable   its backend (Redis, a busy SQLite file) cannot be used now
    └── DeliveryError          sending to a destination failed
        └── TransportError     no whole answer came: refused, reset, cut off; retry later
            └── TransportTimeout   the timeout ran out first

Adapters translate library exceptions (sqlite3, redis, httpx, OSError, ...) into
these with ``raise ... from exc`` so callers never depend on a backend's error types.
``is_transient`` tells a failure of a backend's availability (retry the same
work later) from one of the work itself (the same input fails again): the
stages quarantine an event only for the second kind.
Bad *input* is never an exception: validation returns typed outcomes with
stable codes (see ``convtrack.model.codes``).
"""

from __future__ import annotations


class ConvtrackError(Exception):
    """Base class of every error convtrack raises on purpose."""


class ConfigError(ConvtrackError):
    """A configuration file or environment variable is invalid."""


class MissingDependency(ConvtrackError):
    """What was asked for needs an optional dependency that is not installed.

    ``extra`` is the package extra that brings it (``pip install 'convtrack[extra]'``);
    the message says so in one line (see ``convtrack.optional``).
    """

    def __init__(self, message: str, *, package: str, extra: str) -> None:
        super().__init__(message)
        self.package = package
        self.extra = extra


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


class DeliveryError(ConvtrackError):
    """Sending events to a destination failed."""


class TransportError(DeliveryError):
    """A request to a destination got no whole answer (refused, reset, cut off, timed out).

    ``maybe_sent``: the whole request had left before it failed (waiting for or reading
    the answer), so the platform may have acted on it. The message names the host,
    never the URL's path or query: they may hold a secret.
    """

    def __init__(self, message: str, *, maybe_sent: bool) -> None:
        super().__init__(message)
        self.maybe_sent = maybe_sent


class TransportTimeout(TransportError):
    """The request's timeout ran out (connecting, sending, or reading the answer)."""


# SQLite primary result codes that say the database cannot be used right now, not that
# the statement is wrong: BUSY, LOCKED, NOMEM, READONLY, IOERR, FULL, CANTOPEN, PROTOCOL.
_SQLITE_UNAVAILABLE = frozenset({5, 6, 7, 8, 10, 13, 14, 15})
# Redis error replies of a server that cannot take the command now (the first word).
_REDIS_UNAVAILABLE = frozenset(
    {"OOM", "READONLY", "LOADING", "MASTERDOWN", "NOREPLICAS", "BUSY", "TRYAGAIN", "CLUSTERDOWN"}
)
_NETWORK_NAMES = frozenset({"ConnectionError", "TimeoutError", "BusyLoadingError"})


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` (or an error it was raised from) is about availability.

    True for the log (``LogError``: it is the stage's input, not an event),
    ``StoreUnavailable``, operating-system errors (a full disk, a lost mount),
    SQLite's "cannot use the file now" codes, and a Redis that refuses commands
    for now (out of memory, loading, read-only). Anything else (a value that
    overflows, a bug that trips on one event) repeats with the same input.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, (LogError, StoreUnavailable, OSError)):
            return True
        code = getattr(current, "sqlite_errorcode", None)
        if isinstance(code, int) and code & 0xFF in _SQLITE_UNAVAILABLE:
            return True
        name = type(current).__name__
        if name in _NETWORK_NAMES:
            return True
        if name == "ResponseError" and str(current).split(" ", 1)[0] in _REDIS_UNAVAILABLE:
            return True
        current = current.__cause__ or current.__context__
    return False
