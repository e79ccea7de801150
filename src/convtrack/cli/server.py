"""For CLI commands that ask a running server: where it listens and the admin key.

The key comes from ``CONVTRACK_ADMIN_KEY`` (as ``serve`` seeds it) or else the
data dir's ``keys.json`` (what ``serve`` wrote on its first start); the URL
from ``--url`` or else the settings' ``server.host`` and ``server.port``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import click
import httpx

from convtrack.config import Settings

ADMIN_KEY_ENV = "CONVTRACK_ADMIN_KEY"
_ANY_ADDRESS = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}


def server_url(settings: Settings, url: str | None) -> str:
    if url:
        return url.rstrip("/")
    host = _ANY_ADDRESS.get(settings.server.host, settings.server.host)
    return f"http://{f'[{host}]' if ':' in host else host}:{settings.server.port}"


def admin_key(settings: Settings, environ: Mapping[str, str] | None = None) -> str:
    env = os.environ if environ is None else environ
    if env.get(ADMIN_KEY_ENV):
        return env[ADMIN_KEY_ENV]
    path = settings.data_dir / "keys.json"
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        stored = None
    except (OSError, ValueError) as exc:
        raise click.ClickException(f"cannot read the admin key from {path}: {exc}") from exc
    if isinstance(stored, dict) and isinstance(stored.get("admin"), str):
        return str(stored["admin"])
    raise click.ClickException(
        f"no admin key: set {ADMIN_KEY_ENV}, or give --data-dir (or --config) of the"
        f" server, whose keys.json holds it (looked in {path})"
    )


def post_admin(settings: Settings, url: str | None, path: str, timeout_secs: float) -> Any:
    """POST to an admin route; the decoded JSON answer of a 2xx, else a clear error."""
    base = server_url(settings, url)
    key = admin_key(settings)
    try:
        answer = httpx.post(
            f"{base}{path}", headers={"Authorization": f"Bearer {key}"}, timeout=timeout_secs
        )
    except httpx.HTTPError as exc:
        raise click.ClickException(
            f"cannot reach the server at {base} ({exc}): is it running? (--url)"
        ) from exc
    try:
        body = answer.json()
    except ValueError:
        body = None
    if answer.is_success and body is not None:
        return body
    detail = body if isinstance(body, dict) else {}
    code = detail.get("error", f"HTTP {answer.status_code}")
    message = detail.get("message")
    raise click.ClickException(
        f"the server at {base} answered {answer.status_code} {code}"
        + (f": {message}" if message else "")
    )
