"""Failpoints: named places where a test can make the process fail on purpose.

Two kinds, both inert unless a test arms them:

- ``CONVTRACK_FAILPOINTS=cold.after_manifest`` (comma-separated names) makes
  ``hit("cold.after_manifest")`` SIGKILL the process right there (and, in a
  child process of ``serve``, the serving process: the whole server), so crash
  tests can stop a real server between two side effects.
- ``CONVTRACK_POISON=hot_apply=order-7,cold=order-9`` (comma-separated
  ``stage=event_id``), or ``with poison("hot_apply", "order-7"):`` in a test of
  this process, makes that event raise ``InjectedFault`` at that stage every
  time it gets there: a poison event, for the quarantine's tests. The stages
  are those of ``convtrack.process.base.STAGES`` plus ``cold`` (the lake
  writer) and ``deliver`` (a destination building a request).

Unset (always, in production) each check is one frozenset or dict lookup per batch.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_ARMED = frozenset(
    name.strip() for name in os.environ.get("CONVTRACK_FAILPOINTS", "").split(",") if name.strip()
)


def hit(name: str) -> None:
    if name in _ARMED:
        # A failpoint stands for the machine failing: in a child process of serve, the
        # whole server dies (runtime/children.py names the serving process).
        supervisor = os.environ.get("CONVTRACK_SUPERVISOR_PID", "")
        if supervisor.isdigit():
            os.kill(int(supervisor), signal.SIGKILL)
        os.kill(os.getpid(), signal.SIGKILL)


class InjectedFault(RuntimeError):
    """The failure a test asked for at one stage for one event."""


def _from_env(text: str) -> dict[str, frozenset[str]]:
    armed: dict[str, set[str]] = {}
    for pair in text.split(","):
        stage, _, event_id = pair.strip().partition("=")
        if stage and event_id:
            armed.setdefault(stage, set()).add(event_id)
    return {stage: frozenset(ids) for stage, ids in armed.items()}


_POISONED: dict[str, frozenset[str]] = _from_env(os.environ.get("CONVTRACK_POISON", ""))
_lock = threading.Lock()
NOTHING: frozenset[str] = frozenset()


def poisoned(stage: str) -> frozenset[str]:
    """The event ids armed to fail at ``stage`` (empty: nothing to check)."""
    return _POISONED.get(stage, NOTHING) if _POISONED else NOTHING


def check(stage: str, event_id: str | None, armed: frozenset[str] | None = None) -> None:
    """Raise ``InjectedFault`` when ``event_id`` is armed at ``stage``."""
    ids = poisoned(stage) if armed is None else armed
    if ids and event_id in ids:
        raise InjectedFault(f"injected fault at {stage} for event {event_id}")


@contextmanager
def poison(stage: str, *event_ids: str) -> Iterator[None]:
    """Arm ``event_ids`` to fail at ``stage`` while the block runs (tests in this process)."""
    with _lock:
        before = _POISONED.get(stage, NOTHING)
        _POISONED[stage] = before | frozenset(event_ids)
    try:
        yield
    finally:
        with _lock:
            if before:
                _POISONED[stage] = before
            else:
                _POISONED.pop(stage, None)
