"""Events as a client sends them, for tests of code that extends convtrack."""

from __future__ import annotations

import itertools
from typing import Any

_numbers = itertools.count(1)


def conversion(event_id: str | None = None, **fields: Any) -> dict[str, Any]:
    """A ``POST /v1/track`` body of a valid purchase (EUR 12.50 by one user), ``fields``
    replacing or adding members (``timestamp`` in ms, ``consent``, ``context``...)."""
    number = next(_numbers)
    event_id = event_id or f"evt-{number}"
    body: dict[str, Any] = {
        "event_id": event_id,
        "event_name": "Purchase",
        "user_id": f"u-{event_id}",
        "value": 1250,
        "currency": "EUR",
    }
    body.update(fields)
    return body
