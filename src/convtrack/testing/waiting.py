"""Waiting in a test for what runs on its own time (a server, a thread, a browser)."""

from __future__ import annotations

import time
from collections.abc import Callable

DEFAULT_TIMEOUT_SECS = 30.0
POLL_SECS = 0.05


def wait_for(
    what: str,
    check: Callable[[], object],
    timeout_secs: float = DEFAULT_TIMEOUT_SECS,
    poll_secs: float = POLL_SECS,
) -> None:
    """Poll ``check`` until it is true; fail naming ``what`` after ``timeout_secs``."""
    deadline = time.monotonic() + timeout_secs
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_secs:g} s waiting for {what}")
        time.sleep(poll_secs)
