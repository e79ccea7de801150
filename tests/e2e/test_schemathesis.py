"""Schemathesis against the schema a real ``convtrack serve`` serves at /openapi.json.

Its engine runs as ``schemathesis run`` would: the documented examples, the
coverage phase (boundary and invalid values of every parameter, undeclared
methods) and a bounded number of generated requests per operation, valid and
invalid, each operation sent with the test key of its role. The run fails on
any 5xx, on an answer the document does not describe (status, content type,
headers, body schema), on an invalid request accepted, and on a 405 without a
correct ``Allow``.

Not checked: that every schema-valid request is accepted (``positive_data_
acceptance``). The schema cannot say all that the validator knows (a
timestamp within the last 7 days, a user_id or a session_id), so a valid-
looking event may rightly get 400; its answer is still checked above.

The seed is fixed so that the suite is repeatable; set
``CONVTRACK_SCHEMATHESIS_EXAMPLES`` (and ``CONVTRACK_SCHEMATHESIS_SEED``) to
run more, or other, examples.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from schemathesis.engine import Status, events

from tests.api.test_openapi import load_spec, operations
from tests.conftest import ADMIN_KEY, BROWSER_UA, SERVER_KEY, WRITE_KEY, ServerProcess

pytestmark = pytest.mark.slow

EXAMPLES = int(os.environ.get("CONVTRACK_SCHEMATHESIS_EXAMPLES", "15"))
SEED = int(os.environ.get("CONVTRACK_SCHEMATHESIS_SEED", "1"))
KEYS = {"admin": ADMIN_KEY, "server": SERVER_KEY, "write": WRITE_KEY}
CHECKS = [
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
    "negative_data_rejection",
    "missing_required_header",
    "unsupported_method",
    "allow_header_conformance",
]
# A batch answers 200 with per-event outcomes when some of its events are invalid: an
# invalid event in it is refused by its entry in "rejected", not by the status.
PER_EVENT_OUTCOMES = {("POST", "/v1/batch"): ["negative_data_rejection"]}


@pytest.fixture
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    # No rate limit: the examples come fast, from few user ids.
    env = {"CONVTRACK_LIMITS_USER_EVENTS_PER_SEC": "0"}
    server = ServerProcess(tmp_path_factory.mktemp("schemathesis") / "data", env)
    server.start()
    yield server
    server.stop()


def run_config(base_url: str) -> dict[str, Any]:
    """What a schemathesis.toml would say, with each operation's key from its role."""
    per_operation = []
    for method, path, operation in operations(load_spec()):
        entry: dict[str, Any] = {"include-path": path, "include-method": method}
        role = operation.get("x-convtrack-role")
        if role is not None:
            entry["headers"] = {"Authorization": f"Bearer {KEYS[role]}"}
        disabled = PER_EVENT_OUTCOMES.get((method, path), [])
        if disabled:
            entry["checks"] = {name: {"enabled": False} for name in disabled}
        if len(entry) > 2:
            per_operation.append(entry)
    return {
        "seed": SEED,
        "base-url": base_url,
        # A browser's user agent: HTTP libraries are counted, but as bots (docs/http-api.md).
        "headers": {"User-Agent": BROWSER_UA},
        "phases": {
            "examples": {"enabled": True},
            "coverage": {"enabled": True},
            "fuzzing": {"enabled": True},
            "stateful": {"enabled": False},
        },
        "generation": {"max-examples": EXAMPLES, "mode": "all", "database": "none"},
        "checks": {"enabled": False, **{name: {"enabled": True} for name in CHECKS}},
        "operations": per_operation,
    }


def failures_of(event: events.ScenarioFinished) -> list[str]:
    found = []
    for checks in event.recorder.checks.values():
        for check in checks:
            if check.failure_info is not None:
                found.append(f"{check.name}: {check.failure_info.failure}")
    return found


def test_the_served_schema_holds(served: ServerProcess) -> None:
    config = schemathesis.Config.from_dict(run_config(served.url))
    schema = schemathesis.openapi.from_url(served.url + "/openapi.json", config=config)
    problems: list[str] = []
    scenarios = 0
    for event in schemathesis.engine.from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            scenarios += 1
            if event.status in (Status.FAILURE, Status.ERROR, Status.INTERRUPTED):
                where = f"{event.phase} {event.label} ({event.status})"
                problems.extend(f"{where}: {text}" for text in failures_of(event) or ["error"])
        elif isinstance(event, (events.NonFatalError, events.FatalError)):
            problems.append(f"{type(event).__name__}: {event.info}")
    assert problems == [], "\n\n".join(problems)
    assert scenarios >= len(list(operations(load_spec())))
    # The keys were used: every read route answered 200 at least once.
    metrics = httpx.get(served.url + "/metrics", timeout=10).text
    for path in ("/v1/rejects", "/v1/stats/live", "/v1/stats/conversions", "/v1/dead-letters"):
        assert f'route="{path}",status="200"' in metrics, path
