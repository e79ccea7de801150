"""convtrack's Python client: events batched by a background worker, retried, counted.

    from convtrack_sdk import Client

    client = Client("WRITE_KEY", "https://track.example.com")
    client.track("Purchase", user_id="u_123", revenue="49.99", currency="USD")
    client.flush()

Standard library only. See docs/python-sdk.md.
"""

from __future__ import annotations

from convtrack_sdk._aio import AsyncClient
from convtrack_sdk._client import Client
from convtrack_sdk._errors import ApiError, ConvtrackError, InvalidEvent, TransportError
from convtrack_sdk._money import minor_digits, to_minor_units
from convtrack_sdk._outcome import Rejection
from convtrack_sdk._retry import RetryPolicy
from convtrack_sdk._stats import ClientStats
from convtrack_sdk._version import VERSION

__version__ = VERSION
__all__ = [
    "ApiError",
    "AsyncClient",
    "Client",
    "ClientStats",
    "ConvtrackError",
    "InvalidEvent",
    "Rejection",
    "RetryPolicy",
    "TransportError",
    "__version__",
    "minor_digits",
    "to_minor_units",
]
