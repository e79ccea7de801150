"""Failpoints: named places where a test can make the process die on purpose.

``CONVTRACK_FAILPOINTS=cold.after_manifest`` (comma-separated names) makes
``hit("cold.after_manifest")`` SIGKILL the process right there, so crash
tests can stop a real process between two side effects. Unset (always, in
production) the check is one frozenset lookup.
"""

from __future__ import annotations

import os
import signal

_ARMED = frozenset(
    name.strip() for name in os.environ.get("CONVTRACK_FAILPOINTS", "").split(",") if name.strip()
)


def hit(name: str) -> None:
    if name in _ARMED:
        os.kill(os.getpid(), signal.SIGKILL)
