"""The browser SDK's build: type-checked, small, and served well by the collector."""

from __future__ import annotations

import asyncio
import base64
import gzip
import hashlib
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from convtrack.collect.browser_sdk import BrowserSdk
from convtrack.collect.http import Request
from tests.conftest import WRITE_KEY, ServerProcess
from tests.support.sdk_browser_kit import ROOT, SDK_DIR, build_sdk

MAX_GZIPPED_BYTES = 8 * 1024


@pytest.fixture(scope="module")
def built() -> Path:
    return build_sdk()


def test_the_sources_type_check(built: Path) -> None:
    result = subprocess.run(
        [str(SDK_DIR / "node_modules" / ".bin" / "tsc"), "--noEmit", "-p", str(SDK_DIR)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    config = (SDK_DIR / "tsconfig.json").read_text()
    assert '"checkJs": true' in config and '"strict": true' in config


def test_under_8_kb_gzipped_with_no_runtime_dependency(built: Path) -> None:
    body = built.read_bytes()
    assert len(gzip.compress(body, compresslevel=9)) < MAX_GZIPPED_BYTES
    package = (SDK_DIR / "package.json").read_text()
    assert '"dependencies"' not in package  # build tools only (devDependencies)
    assert b"import " not in body and b"require(" not in body  # one self-contained file


def test_the_built_file_is_not_committed(built: Path) -> None:
    tracked = subprocess.run(
        ["git", "ls-files", "--error-unmatch", str(built)],
        cwd=ROOT,
        capture_output=True,
        check=False,
    )
    ignored = subprocess.run(["git", "check-ignore", "-q", str(built)], cwd=ROOT, check=False)
    assert tracked.returncode != 0 and ignored.returncode == 0


def test_the_collector_serves_it(built: Path, server: ServerProcess) -> None:
    body = built.read_bytes()
    digest = hashlib.sha256(body).hexdigest()[:16]
    current = httpx.get(
        f"{server.url}/sdk/v1/convtrack.js", headers={"Origin": "https://shop.example"}
    )
    assert current.status_code == 200 and current.content == body
    headers = current.headers
    assert headers["content-type"] == "text/javascript; charset=utf-8"
    assert headers["cache-control"] == "public, max-age=300"
    assert headers["access-control-allow-origin"] == "*"
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["content-encoding"] == "gzip"  # httpx asked for it, and inflated it
    assert headers["link"] == f'</sdk/v1/convtrack.{digest}.js>; rel="canonical"'

    pinned = httpx.get(f"{server.url}/sdk/v1/convtrack.{digest}.js")
    assert pinned.status_code == 200 and pinned.content == body
    assert pinned.headers["cache-control"] == "public, max-age=31536000, immutable"
    stale = httpx.get(f"{server.url}/sdk/v1/convtrack.{'0' * 16}.js")
    assert stale.status_code == 404 and stale.json()["error"] == "not_found"
    assert digest in stale.json()["message"]

    etag = current.headers["etag"]
    assert (
        httpx.get(f"{server.url}/sdk/v1/convtrack.js", headers={"If-None-Match": etag}).status_code
        == 304
    )
    plain = httpx.get(f"{server.url}/sdk/v1/convtrack.js", headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers and plain.content == body
    head = httpx.head(f"{server.url}/sdk/v1/convtrack.js")
    assert head.status_code == 200 and head.content == b""
    assert httpx.post(f"{server.url}/sdk/v1/convtrack.js").status_code == 405
    assert httpx.get(f"{server.url}/sdk/v1/other.js").status_code == 404

    manifest = httpx.get(f"{server.url}/sdk/v1/manifest.json").json()
    sri = "sha384-" + base64.b64encode(hashlib.sha384(body).digest()).decode()
    assert manifest == {
        "version": "1.0.0",
        "path": "/sdk/v1/convtrack.js",
        "hashed_path": f"/sdk/v1/convtrack.{digest}.js",
        "integrity": sri,
        "bytes": len(body),
        "gzip_bytes": len(gzip.compress(body, compresslevel=9, mtime=0)),
    }


def test_ingest_answers_expose_retry_after_to_the_page(server: ServerProcess) -> None:
    """The SDK honours Retry-After on 429/503: a cross-origin page can read it only if exposed."""
    answer = httpx.post(
        f"{server.url}/v1/track?writeKey={WRITE_KEY}",
        content=b"{}",
        headers={"Origin": "https://shop.example", "Content-Type": "text/plain"},
    )
    assert answer.status_code == 400
    assert answer.headers["access-control-allow-origin"] == "https://shop.example"
    assert answer.headers["access-control-expose-headers"] == "retry-after"


def serve(sdk: BrowserSdk, path: str) -> tuple[int, dict[bytes, bytes], bytes]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        sent.append(dict(message))

    scope = {"type": "http", "method": "GET", "path": path, "headers": [], "query_string": b""}
    response = asyncio.run(sdk.serve(Request(scope, receive)))
    asyncio.run(response.send(send))
    return sent[0]["status"], dict(sent[0]["headers"]), sent[1]["body"]


def test_not_built_answers_404_with_the_build_command(tmp_path: Path) -> None:
    sdk = BrowserSdk(tmp_path / "sdk" / "convtrack.js")
    for path in (
        "/sdk/v1/convtrack.js",
        "/sdk/v1/manifest.json",
        f"/sdk/v1/convtrack.{'a' * 16}.js",
    ):
        status, _, body = serve(sdk, path)
        assert status == 404, path
        assert b'"error":"sdk_not_built"' in body and b"python3 dev.py build-sdk" in body
    # Built later: picked up without a restart; rebuilt: the new bytes, a new hashed name.
    sdk.path.parent.mkdir()
    sdk.path.write_bytes(b"/* convtrack.js 9.9.9 | x */ one();")
    status, headers, body = serve(sdk, "/sdk/v1/convtrack.js")
    assert (status, body) == (200, b"/* convtrack.js 9.9.9 | x */ one();")
    first = headers[b"link"]
    sdk.path.write_bytes(b"/* convtrack.js 9.9.10 | x */ two(); ")
    status, headers, body = serve(sdk, "/sdk/v1/convtrack.js")
    assert body.endswith(b"two(); ") and headers[b"link"] != first
