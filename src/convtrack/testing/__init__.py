"""Test doubles for code that extends convtrack (a destination, a backend, a stage):
the manual clock every stage takes, stand-ins of the ad platforms that check requests
against their documented contracts (``convtrack.testing.standins``), an event
factory and a poll-until helper. Standard library only; nothing here runs in
production.
"""

from __future__ import annotations

from convtrack.clock import ManualClock
from convtrack.testing.events import conversion, forwarded, payload
from convtrack.testing.waiting import wait_for

__all__ = ["ManualClock", "conversion", "forwarded", "payload", "wait_for"]
