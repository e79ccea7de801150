"""Every integer query parameter the served OpenAPI document names is range-checked.

The walk reads ``/openapi.json`` from a real ``convtrack serve``: for each
operation and each integer query parameter it sends values just outside the
documented range, far outside any 64-bit integer, of the wrong type, repeated
and in the object style, and expects the documented 400 body naming the
parameter, never a 5xx; the documented bounds themselves are accepted.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import httpx
import jsonschema_rs
import pytest

from tests.conftest import ADMIN_KEY, SERVER_KEY, ServerProcess, auth

HTTP_METHODS = {"get", "put", "post", "delete", "patch"}
KEYS = {"admin": ADMIN_KEY, "server": SERVER_KEY}
# Not integers in any spelling the API accepts: only ASCII digits with an optional "-".
WRONG_TYPES = ["", "abc", "1.5", "1e3", "+1", " 1", "1 ", "0x10", "²", "١٢", "true", "[1]", "{}"]
OUT_OF_ANY_RANGE = [2**63, -(2**63) - 1, 10**20, -(10**20), int("9" * 400)]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = ServerProcess(tmp_path_factory.mktemp("query") / "data")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def spec(served: ServerProcess) -> dict[str, Any]:
    document: dict[str, Any] = httpx.get(served.url + "/openapi.json").json()
    return document


def resolve(spec: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        target: Any = spec
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def integer_parameters(
    spec: dict[str, Any],
) -> Iterator[tuple[str, str, dict[str, Any], dict[str, Any]]]:
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if method not in HTTP_METHODS:
                continue
            for reference in operation.get("parameters", []):
                parameter = resolve(spec, reference)
                if parameter["in"] == "query" and parameter["schema"].get("type") == "integer":
                    yield method.upper(), path, operation, parameter


def valid_query(spec: dict[str, Any], operation: dict[str, Any]) -> dict[str, str]:
    """A value for each required parameter: its example, else its first enum member."""
    query = {}
    for reference in operation.get("parameters", []):
        parameter = resolve(spec, reference)
        if parameter["in"] == "query" and parameter.get("required"):
            schema = parameter["schema"]
            value = parameter.get("example", schema.get("enum", [None])[0])
            assert value is not None, parameter["name"]
            query[parameter["name"]] = str(value)
    return query


def bad_values(schema: dict[str, Any]) -> list[str]:
    values = list(WRONG_TYPES) + [str(n) for n in OUT_OF_ANY_RANGE]
    if "minimum" in schema:
        values.append(str(schema["minimum"] - 1))
    if "maximum" in schema:
        values.append(str(schema["maximum"] + 1))
    return values


def send(
    server: ServerProcess, method: str, path: str, operation: dict[str, Any], query: str
) -> httpx.Response:
    key = KEYS[operation["x-convtrack-role"]]
    return httpx.request(method, f"{server.url}{path}?{query}", headers=auth(key), timeout=10)


def test_every_operation_with_integer_parameters_is_walked(spec: dict[str, Any]) -> None:
    walked = {(method, path, p["name"]) for method, path, _, p in integer_parameters(spec)}
    assert {
        ("GET", "/v1/rejects", "limit"),
        ("GET", "/v1/rejects", "cursor"),
        ("GET", "/v1/stats/live", "minutes"),
        ("GET", "/v1/reports/attribution", "lookback_days"),
        ("GET", "/v1/dead-letters", "limit"),
    } <= walked
    for _, _, _, parameter in integer_parameters(spec):
        schema = parameter["schema"]
        assert "minimum" in schema and "maximum" in schema, parameter["name"]
        assert schema["maximum"] <= 2**63 - 1, parameter["name"]


def test_out_of_range_and_wrong_type_integers_get_the_documented_400(
    served: ServerProcess, spec: dict[str, Any]
) -> None:
    seen = 0
    for method, path, operation, parameter in integer_parameters(spec):
        name = parameter["name"]
        documented = resolve(spec, operation["responses"]["400"])
        error_schema = resolve(spec, documented["content"]["application/json"]["schema"])
        validator = jsonschema_rs.validator_for(error_schema)
        base = valid_query(spec, operation)
        queries = [urlencode({**base, name: value}) for value in bad_values(parameter["schema"])]
        queries.append(urlencode({**base, f"{name}[a]": "1"}))
        queries.append(urlencode({**base, f"{name}.a": "1"}))
        queries.append(urlencode([*base.items(), (name, "1"), (name, "1")]))
        queries.append(urlencode(base) + f"&{name}")
        for query in queries:
            response = send(served, method, path, operation, query)
            where = f"{method} {path}?{query[:80]}"
            assert response.status_code == 400, (where, response.status_code, response.text)
            body = response.json()
            validator.validate(body)
            assert body["error"] == "query_invalid", where
            assert body["parameter"] == name, where
            assert name in body["message"], where
            seen += 1
    assert seen >= 5 * 20


def test_the_documented_bounds_are_accepted(served: ServerProcess, spec: dict[str, Any]) -> None:
    for method, path, operation, parameter in integer_parameters(spec):
        base = valid_query(spec, operation)
        schema = parameter["schema"]
        for value in (schema["minimum"], schema["maximum"], f"0{schema['minimum']}"):
            query = urlencode({**base, parameter["name"]: value})
            response = send(served, method, path, operation, query)
            assert response.status_code == 200, (method, path, query, response.text)


def test_a_huge_cursor_is_refused_not_a_500(served: ServerProcess) -> None:
    for cursor in ("9223372036854775808", "-9223372036854775809", "99999999999999999999"):
        response = httpx.get(
            f"{served.url}/v1/rejects?cursor={cursor}", headers=auth(ADMIN_KEY), timeout=10
        )
        assert response.status_code == 400, response.text
        assert response.json()["parameter"] == "cursor"
    largest = httpx.get(
        f"{served.url}/v1/rejects?cursor=9223372036854775807", headers=auth(ADMIN_KEY)
    )
    assert largest.status_code == 200
    assert largest.json()["items"] == []
