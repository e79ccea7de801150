"""The health monitor: a slow or failing backend check never delays a start, and
nothing is called ready before it has been checked."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from convtrack.runtime.health import HealthMonitor, Report


def test_start_returns_before_a_slow_check_has_answered() -> None:
    release = threading.Event()
    started = threading.Event()

    def slow() -> Report:
        started.set()
        release.wait(10)
        return {"healthy": True, "detail": "ok"}

    monitor = HealthMonitor({"hot": slow})
    began = time.monotonic()
    monitor.start()  # a check run here, before returning, would hold the start for 10 s
    try:
        assert time.monotonic() - began < 5
        assert started.wait(5), "the first round runs on the monitor's thread"
        assert monitor.report("hot") == {"healthy": False, "detail": "not checked yet"}
    finally:
        release.set()
        monitor.stop()


def test_unchecked_is_not_ready_and_the_first_answer_replaces_it() -> None:
    answered = threading.Event()

    def fine() -> Report:
        answered.set()
        return {"healthy": True, "detail": "ok"}

    monitor = HealthMonitor({"hot": fine}, interval_secs=60)
    assert monitor.report("hot")["healthy"] is False
    monitor.start()
    try:
        assert answered.wait(5)
        deadline = time.monotonic() + 5
        while monitor.report("hot")["healthy"] is not True:
            assert time.monotonic() < deadline, monitor.report("hot")
            time.sleep(0.01)
        assert monitor.report("hot") == {"healthy": True, "detail": "ok"}
    finally:
        monitor.stop()


def test_a_first_healthy_answer_is_not_logged_as_a_recovery(
    caplog: pytest.LogCaptureFixture,
) -> None:
    answers: list[Report] = [
        {"healthy": True, "detail": "ok"},
        {"healthy": False, "detail": "down"},
        {"healthy": True, "detail": "ok"},
    ]
    monitor = HealthMonitor({"hot": lambda: answers.pop(0)})
    with caplog.at_level(logging.INFO, logger="convtrack.health"):
        monitor.check_now()
        assert [r.getMessage() for r in caplog.records] == []
        monitor.check_now()
        monitor.check_now()
    assert [r.getMessage() for r in caplog.records] == ["backend_unhealthy", "backend_recovered"]


def test_a_first_failing_answer_is_logged_and_a_raising_check_reports(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken() -> Report:
        raise ConnectionError("refused")

    monitor = HealthMonitor({"hot": broken})
    with caplog.at_level(logging.INFO, logger="convtrack.health"):
        monitor.check_now()
        monitor.check_now()
    assert [r.getMessage() for r in caplog.records] == ["backend_unhealthy"]
    assert monitor.report("hot") == {"healthy": False, "detail": "ConnectionError: refused"}


def test_checked_once_every_check_has_answered() -> None:
    monitor = HealthMonitor({"hot": lambda: {"healthy": True, "detail": "ok"}})
    assert not monitor.checked
    monitor.check_now()
    assert monitor.checked
    assert HealthMonitor({}).checked  # nothing to check
