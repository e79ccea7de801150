"""Query parameters of the read routes, read strictly.

Each parameter a route reads may be given once, as ``name=value``: given
twice, or in the object style (``limit[a]=1``, ``limit.a=1``), it is refused
rather than one copy silently chosen. An integer is plain ASCII digits (an
optional ``-``) within the range the OpenAPI document states: never a Python
``int()`` of any Unicode digit, never a value too large for the store (a
cursor past 2^63 - 1 once answered 500 from SQLite). Every refusal is
``400 {"error": "query_invalid", "parameter": NAME, "message": ...}``.

Parameters a route does not read are ignored (a cache buster, say).
"""

from __future__ import annotations

import re
from typing import Final, NamedTuple

from convtrack.collect.http import Request, Response, error
from convtrack.model import codes

INT64_MAX: Final = 2**63 - 1
_INTEGER = re.compile(r"-?[0-9]{1,20}", re.ASCII)


class QueryInvalid(Exception):
    """A query parameter the route cannot use; the app answers 400 ``query_invalid``."""

    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(message)
        self.parameter = parameter
        self.message = message

    def response(self) -> Response:
        return error(400, codes.ERR_BAD_QUERY, parameter=self.parameter, message=self.message)


class IntParam(NamedTuple):
    """An integer parameter and its documented range (``minimum``/``maximum`` in openapi.json)."""

    name: str
    minimum: int
    maximum: int

    def describe(self) -> str:
        return f"{self.name} must be an integer from {self.minimum} to {self.maximum}"


def text(request: Request, name: str) -> str | None:
    """The one value of ``name`` (``""`` when given empty), or None when absent."""
    query = request.query
    for key in query:
        if key != name and key.startswith(name) and key[len(name)] in "[.":
            raise QueryInvalid(name, f"{name} must be a single value, not an object ({name}[...]=)")
    values = query.get(name)
    if values is None:
        return None
    if len(values) > 1:
        raise QueryInvalid(name, f"{name} must be given at most once")
    return values[0]


def optional_integer(request: Request, param: IntParam) -> int | None:
    """The parameter's integer within its range, None when absent; else QueryInvalid."""
    value = text(request, param.name)
    if value is None:
        return None
    if _INTEGER.fullmatch(value) is None:
        raise QueryInvalid(param.name, param.describe())
    number = int(value)
    if not param.minimum <= number <= param.maximum:
        raise QueryInvalid(param.name, param.describe())
    return number


def integer(request: Request, param: IntParam, default: int) -> int:
    """As ``optional_integer``, with ``default`` when the parameter is absent."""
    value = optional_integer(request, param)
    return default if value is None else value
