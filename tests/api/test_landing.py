"""``GET /`` says what the server is and how to send a first event; ``GET /docs`` lists the API."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import convtrack
from convtrack.api.landing import prefers_html
from convtrack.clock import ManualClock
from convtrack.runtime.embedded import Pipeline
from tests.api.test_openapi import load_spec, operations
from tests.conftest import ADMIN_KEY, SERVER_KEY, WRITE_KEY, ServerProcess
from tests.support.inprocess import make_pipeline

BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


@pytest.fixture
def pipeline(tmp_path: Path) -> Iterator[Pipeline]:
    made = make_pipeline(tmp_path, ManualClock(1_800_000_000_000_000))
    try:
        yield made
    finally:
        made.close()


def get(pipeline: Pipeline, path: str, **headers: str) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=pipeline.app, client=("198.51.100.7", 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://shop.test:9000") as c:
            return await c.get(path, headers=headers)

    return asyncio.run(go())


def media_type(response: httpx.Response) -> str:
    return response.headers["content-type"].split(";")[0]


@pytest.mark.parametrize(
    ("accept", "html"),
    [
        (BROWSER_ACCEPT, True),  # what browsers send
        ("*/*", False),  # curl
        ("", False),
        ("text/plain", False),
        ("text/html", True),
        ("text/*", False),  # a tie: plain text
        ("text/html;q=0.5, text/plain", False),
        ("text/html, text/plain;q=0.5", True),
        ("text/html;q=0, */*", False),
        ("application/json", False),
        ("TEXT/HTML", True),
        ("text/html;q=oops", False),
    ],
)
def test_html_goes_to_those_who_prefer_it(accept: str, html: bool) -> None:
    assert prefers_html(accept) is html


def test_the_landing_page_for_a_browser(pipeline: Pipeline) -> None:
    page = get(pipeline, "/", accept=BROWSER_ACCEPT)
    assert page.status_code == 200 and media_type(page) == "text/html"
    assert f"convtrack {convtrack.__version__}" in page.text
    assert 'href="/docs"' in page.text and 'href="/openapi.json"' in page.text
    assert "curl -sS http://shop.test:9000/v1/track" in page.text  # the server's own URL
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert page.headers["vary"] == "Accept"
    # Self-contained: no script, and no URL but the server's own.
    assert "<script" not in page.text
    urls = re.findall(r"https?://[^\s\"'<]+", page.text)
    assert urls and all(url.startswith("http://shop.test:9000/") for url in urls), urls
    for key in (WRITE_KEY, SERVER_KEY, ADMIN_KEY):  # no key, and none shown
        assert key not in page.text


def test_the_landing_page_for_curl(pipeline: Pipeline) -> None:
    page = get(pipeline, "/", accept="*/*")
    assert page.status_code == 200 and media_type(page) == "text/plain"
    assert page.text.startswith(f"convtrack {convtrack.__version__}: ")
    assert "http://shop.test:9000/docs" in page.text
    assert "http://shop.test:9000/openapi.json" in page.text
    assert '-H "Content-Type: application/json"' in page.text


def test_a_host_header_that_is_no_host_is_not_echoed(pipeline: Pipeline) -> None:
    page = get(pipeline, "/", accept=BROWSER_ACCEPT, host='"><script>alert(1)</script>')
    assert page.status_code == 200
    assert "<script" not in page.text and "alert" not in page.text


def test_the_reference_lists_every_operation(pipeline: Pipeline) -> None:
    spec = load_spec()
    html = get(pipeline, "/docs", accept=BROWSER_ACCEPT)
    text = get(pipeline, "/docs")
    assert media_type(html) == "text/html" and media_type(text) == "text/plain"
    for method, path, operation in operations(spec):
        # (no path holds a character that HTML escapes)
        assert f"<code>{method}</code></td><td><code>{path}</code>" in html.text, (method, path)
        assert re.search(rf"^  {method} +{re.escape(path)} ", text.text, re.M), (method, path)
        assert operation["summary"] in text.text
    assert "(admin key)" in text.text and "(no key)" in text.text
    assert "<script" not in html.text


def test_the_pages_refuse_other_methods(pipeline: Pipeline) -> None:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=pipeline.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.post("/", content=b"{}")

    refused = asyncio.run(go())
    assert refused.status_code == 405
    assert {m.strip() for m in refused.headers["allow"].split(",")} == {"GET", "HEAD"}


def run_shell(command: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-c", command], env=env, capture_output=True, text=True,
                          timeout=30, check=False)  # fmt: skip


def test_the_first_event_the_page_shows_is_accepted(server: ServerProcess) -> None:
    """What a new user does: read the page with curl, paste its command, get a 202."""
    page = httpx.get(server.url + "/", headers={"Accept": "*/*"}, timeout=10)
    assert page.status_code == 200
    assert f"{server.url}/docs" in page.text
    command = page.text.split("\n\ncurl ", 1)[1].split("\n\n", 1)[0]
    env: dict[str, Any] = {**os.environ, "WRITE_KEY": WRITE_KEY}
    sent = run_shell("curl -sS -w ' %{http_code}' " + command, env)
    assert sent.returncode == 0, sent.stderr
    assert sent.stdout.endswith(" 202") and '"status":"accepted"' in sent.stdout, sent.stdout
    head = httpx.head(server.url + "/", timeout=10)
    assert head.status_code == 200 and head.content == b""
    assert int(head.headers["content-length"]) == len(page.content)
