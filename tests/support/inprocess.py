"""Drive a Pipeline in this process: requests through its ASGI app, steps by hand."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx

from convtrack.clock import Clock
from convtrack.config import load_settings
from convtrack.runtime.embedded import Pipeline
from tests.conftest import ADMIN_KEY, SERVER_KEY, WRITE_KEY, auth

ENV = {
    "CONVTRACK_WRITE_KEY": WRITE_KEY,
    "CONVTRACK_SERVER_KEY": SERVER_KEY,
    "CONVTRACK_ADMIN_KEY": ADMIN_KEY,
    "CONVTRACK_TOKEN_SECRET": "in-process-token-secret-0123456789",
}


def make_pipeline(data_dir: Path, clock: Clock, **settings: dict[str, Any]) -> Pipeline:
    overrides: dict[str, dict[str, Any]] = {"server": {"data_dir": str(data_dir)}, **settings}
    return Pipeline(load_settings(environ=ENV, overrides=overrides), clock=clock, environ=ENV)


def call(
    pipeline: Pipeline, method: str, path: str, body: Any = None, key: str = SERVER_KEY
) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=pipeline.app, client=("198.51.100.7", 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.request(method, path, json=body, headers=auth(key))

    return asyncio.run(go())


def process_all(pipeline: Pipeline) -> None:
    """Run the processor until it has nothing left to read."""
    while pipeline.processor.run_once():
        pass


def conversions(pipeline: Pipeline, date: str, campaign_id: str | None = None) -> dict[str, Any]:
    query = f"/v1/stats/conversions?date={date}"
    if campaign_id is not None:
        query += f"&campaign_id={campaign_id}"
    response = call(pipeline, "GET", query)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result
