"""The OpenAPI document and docs/http-api.md stay true to the code that serves the API."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

import convtrack
from convtrack.api.app import INGEST_ROUTES, App
from convtrack.collect.ingest import SEGMENT_ROUTE_TYPES
from convtrack.config import LimitsSettings, load_settings
from convtrack.model import codes
from convtrack.model.segment import is_segment, validate_segment
from convtrack.model.timeparse import parse_timestamp_us
from convtrack.model.validate import IngestFacts, Rules, validate_event
from convtrack.runtime.embedded import Pipeline

DOC_PATH = Path(__file__).resolve().parents[2] / "docs" / "http-api.md"
HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


def load_spec() -> dict[str, Any]:
    text = resources.files("convtrack.api").joinpath("openapi.json").read_text("utf-8")
    spec: dict[str, Any] = json.loads(text)
    return spec


def code_constants() -> dict[str, str]:
    """Every module-level code in ``model.codes``: NAME = "lower_snake_case"."""
    return {
        name: value
        for name, value in vars(codes).items()
        if re.fullmatch(r"[A-Z][A-Z0-9_]*", name)
        and isinstance(value, str)
        and re.fullmatch(r"[a-z][a-z0-9_]*", value)
    }


def field_codes() -> set[str]:
    """Codes of one event or body (``errors[].code``); the rest are ``error`` strings."""
    return {value for name, value in code_constants().items() if not name.startswith("ERR_")}


def error_strings() -> set[str]:
    return {value for name, value in code_constants().items() if name.startswith("ERR_")}


def operations(spec: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if method in HTTP_METHODS:
                yield method.upper(), path, operation


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[App]:
    for name in ("CONVTRACK_WRITE_KEY", "CONVTRACK_SERVER_KEY", "CONVTRACK_ADMIN_KEY"):
        monkeypatch.delenv(name, raising=False)
    settings = load_settings(environ={}, overrides={"server": {"data_dir": str(tmp_path)}})
    pipeline = Pipeline(settings)
    try:
        yield pipeline.app
    finally:
        pipeline.close()


def test_the_document_is_openapi_3_1() -> None:
    spec = load_spec()
    assert re.fullmatch(r"3\.1\.\d+", spec["openapi"])
    assert spec["info"]["title"]
    assert spec["info"]["version"] == convtrack.__version__
    assert set(spec["components"]["securitySchemes"]) == {
        "bearerAuth",
        "basicAuth",
        "writeKeyQuery",
    }
    query_scheme = spec["components"]["securitySchemes"]["writeKeyQuery"]
    assert (query_scheme["type"], query_scheme["in"], query_scheme["name"]) == (
        "apiKey",
        "query",
        "writeKey",
    )


def test_every_route_the_app_serves_is_in_the_document(app: App) -> None:
    spec = load_spec()
    documented = {(method, path): op for method, path, op in operations(spec)}
    served = set(app.routes) | set(app.open_routes) | {("OPTIONS", p) for p in INGEST_ROUTES}
    served |= set(app.templated_routes)
    assert served - set(documented) == set(), "routes served but not documented"
    assert set(documented) - served == set(), "routes documented but not served"

    for (method, path), (role, _handler) in app.routes.items():
        operation = documented[(method, path)]
        assert operation.get("x-convtrack-role") == role, (method, path)
        schemes = {name for requirement in operation["security"] for name in requirement}
        assert {"bearerAuth", "basicAuth"} <= schemes, (method, path)
        # ?writeKey= is refused for anything but a write key.
        assert ("writeKeyQuery" in schemes) == (role == "write"), (method, path)
    for method, path in app.open_routes:
        assert documented[(method, path)]["security"] == [], (method, path)
    for path in INGEST_ROUTES:
        assert documented[("OPTIONS", path)]["security"] == [], path


def test_the_app_serves_the_packaged_document(app: App) -> None:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        sent.append(dict(message))

    scope = {
        "type": "http",
        "method": "GET",
        "path": "/openapi.json",
        "headers": [],
        "query_string": b"",
    }
    asyncio.run(app(scope, receive, send))
    assert sent[0]["status"] == 200
    assert json.loads(sent[1]["body"]) == load_spec()


def test_every_code_is_in_the_document() -> None:
    spec = load_spec()
    schemas = spec["components"]["schemas"]
    assert set(schemas["FieldError"]["properties"]["code"]["enum"]) == field_codes()
    assert set(schemas["Error"]["properties"]["error"]["enum"]) == error_strings()
    text = json.dumps(spec)
    missing = {value for value in code_constants().values() if f'"{value}"' not in text}
    assert missing == set()


def test_the_docs_mention_every_code_and_limit() -> None:
    doc = DOC_PATH.read_text(encoding="utf-8")
    assert {code for code in field_codes() if f"`{code}`" not in doc} == set()
    assert {err for err in error_strings() if f'"{err}"' not in doc} == set()
    settings = {f"limits.{name}" for name in LimitsSettings.__struct_fields__}
    assert {name for name in settings if f"`{name}`" not in doc} == set()
    assert "GET /openapi.json" in doc


def request_examples(spec: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every event the document shows as a request body (batch items included)."""
    for name, example in enumerate(spec["components"]["schemas"]["Event"]["examples"]):
        yield f"Event example {name}", example
    for method, path, operation in operations(spec):
        content = operation.get("requestBody", {}).get("content")
        if not content or path not in INGEST_ROUTES:  # only event bodies are checked here
            continue
        bodies = [item["value"] for item in content["application/json"]["examples"].values()]
        bodies.append(json.loads(content["text/plain"]["example"]))
        for body in bodies:
            for index, event in enumerate(body.get("batch", [body])):
                yield f"{method} {path} example {index}", event


def test_the_documented_examples_are_valid_events() -> None:
    seen = 0
    for where, event in request_examples(load_spec()):
        timestamp = parse_timestamp_us(event["timestamp"]) if "timestamp" in event else None
        facts = IngestFacts(
            source="default", key_role="write", received_at_us=timestamp or 1_800_000_000_000_000
        )
        if is_segment(event):  # a Segment-spec example: its mapping, then the same checks
            kind = SEGMENT_ROUTE_TYPES.get(where.split()[1], "track")
            outcome = validate_segment(event, facts, Rules(), default_type=kind)
        else:
            outcome = validate_event(event, facts, Rules())
        assert not isinstance(outcome, list), (where, outcome)
        seen += 1
    assert seen >= 4


def test_the_documented_limits_match_the_settings() -> None:
    spec = load_spec()
    batch = spec["components"]["schemas"]["BatchRequest"]["properties"]["batch"]
    assert batch["maxItems"] == LimitsSettings().max_batch_events
    (limit,) = [
        p for p in spec["paths"]["/v1/rejects"]["get"]["parameters"] if p["name"] == "limit"
    ]
    assert (limit["schema"]["minimum"], limit["schema"]["maximum"]) == (1, 1000)
