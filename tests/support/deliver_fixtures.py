"""Fixtures of the in-process delivery tests: a manual clock, an embedded pipeline on it,
and the tiny platform stand-in (a module may override ``platform`` with its own)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from convtrack.clock import ManualClock
from convtrack.runtime.embedded import Pipeline
from tests.support.deliverkit import START_US, TinyPlatform, open_pipeline


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(start_us=START_US)


@pytest.fixture
def platform() -> Iterator[TinyPlatform]:
    with TinyPlatform() as server:
        yield server  # type: ignore[misc]


@pytest.fixture
def pipeline(tmp_path: Path, clock: ManualClock) -> Iterator[Pipeline]:
    opened = open_pipeline(tmp_path, clock)
    yield opened
    opened.close()
