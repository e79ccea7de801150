"""The SDK's exceptions.

    ConvtrackError
    ├── InvalidEvent (also a ValueError)   an argument that can never make a valid event
    ├── TransportError                     no HTTP answer (refused, reset, timed out, TLS)
    └── ApiError                           an HTTP answer that is not a success

``track``, ``identify`` and ``page`` raise only ``InvalidEvent`` (and ``TypeError``
for properties that are not JSON), at the call, never for anything the network
or the server does: those are retried, counted and logged by the worker.
``conversion_token`` is synchronous and raises ``TransportError`` or ``ApiError``.
"""

from __future__ import annotations


class ConvtrackError(Exception):
    """Base of every exception this package raises on purpose."""


class InvalidEvent(ConvtrackError, ValueError):
    """An event the server would reject whatever happens; ``code`` is the server's code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class TransportError(ConvtrackError):
    """The request got no HTTP answer."""


class ApiError(ConvtrackError):
    """The server answered with a status that is not a success."""

    def __init__(self, status: int, error: str, body: str) -> None:
        super().__init__(f"HTTP {status}: {error}")
        self.status = status
        self.error = error  # the body's "error" field, e.g. "role_not_allowed"
        self.body = body
