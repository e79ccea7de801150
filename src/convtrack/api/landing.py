"""``GET /`` and ``GET /docs``: what this server is, and its API reference; no key.

Both are rendered here, the reference from the packaged OpenAPI document: no
template engine, no script, nothing loaded from elsewhere (the server may have
no internet). HTML for a browser; ``text/plain`` for curl and any client that
does not prefer HTML. Neither page shows a key: it has none to show.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Callable
from importlib import resources
from typing import Any

from convtrack import __version__
from convtrack.collect.http import Request, Response

LANDING_PATH = "/"
DOCS_PATH = "/docs"
PATHS = frozenset({LANDING_PATH, DOCS_PATH})
_HTML = b"text/html; charset=utf-8"
_PLAIN = b"text/plain; charset=utf-8"
# The pages need nothing but their own inline style.
_PAGE_HEADERS = [
    (b"content-security-policy", b"default-src 'none'; style-src 'unsafe-inline'"),
    (b"x-content-type-options", b"nosniff"),
    (b"cache-control", b"no-cache"),
    (b"vary", b"Accept"),
]
_HOST = re.compile(r"[A-Za-z0-9.-]+(:[0-9]{1,5})?|\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?")
_STYLE = (
    "body{font:16px/1.5 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem}"
    "pre{background:#f4f4f4;padding:1rem;overflow-x:auto}code{font-size:.95em}"
    "table{border-collapse:collapse}td,th{text-align:left;padding:.2rem .6rem;"
    "vertical-align:top;border-bottom:1px solid #ddd}"
)


def _quality(accept: str, wanted: str) -> float:
    """The q-value ``accept`` gives ``wanted`` (its most specific match; RFC 9110, 12.5.1)."""
    kind = wanted.split("/", 1)[0] + "/*"
    best: tuple[int, float] = (-1, 0.0)
    for item in accept.split(","):
        media, *params = (part.strip() for part in item.split(";"))
        specificity = {wanted: 2, kind: 1, "*/*": 0}.get(media.lower())
        if specificity is None or specificity < best[0]:
            continue
        quality = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        best = (specificity, quality)
    return best[1]


def prefers_html(accept: str) -> bool:
    """HTML only for a client that prefers it to plain text (a browser); curl's */* does not."""
    return _quality(accept, "text/html") > _quality(accept, "text/plain")


def base_url(request: Request) -> str:
    """This server's URL as the client reached it (its Host header, when it is a host)."""
    scheme = request.scope.get("scheme", "http")
    host = request.headers.get("host", "")
    if not _HOST.fullmatch(host):
        server = request.scope.get("server") or ("127.0.0.1", 8080)
        address = f"[{server[0]}]" if ":" in str(server[0]) else str(server[0])
        host = f"{address}:{server[1]}"
    return f"{scheme}://{host}"


def _first_event(url: str) -> str:
    return (
        f"curl -sS {url}/v1/track \\\n"
        '  -H "Authorization: Bearer $WRITE_KEY" \\\n'
        '  -H "Content-Type: application/json" \\\n'
        '  -d \'{"event_name":"Purchase","user_id":"u_123","value":4999,"currency":"USD"}\''
    )


def landing_text(url: str) -> str:
    return f"""convtrack {__version__}: a self-hosted conversion-tracking server.

It takes conversions (purchases, sign-ups, leads) from browsers and backends,
counts them live, keeps them in a Parquet lake and forwards them to ad platforms.

API reference:  {url}{DOCS_PATH}
OpenAPI 3.1:    {url}/openapi.json
Health:         {url}/healthz  {url}/readyz
Browser SDK:    {url}/sdk/v1/convtrack.js

Send a first event with the write key (printed at the first start; also in
CONVTRACK_WRITE_KEY or the data dir's keys.json):

{_first_event(url)}

It answers 202 {{"status":"accepted","event_id":"..."}} once the event is durable.
Then read today's counters with the server key:

curl -sS {url}/v1/stats/conversions -H "Authorization: Bearer $SERVER_KEY"
"""


def landing_html(url: str) -> str:
    link = html.escape(url)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>convtrack {__version__}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>{_STYLE}</style></head>
<body>
<h1>convtrack {__version__}</h1>
<p>A self-hosted conversion-tracking server. It takes conversions (purchases, sign-ups,
leads) from browsers and backends, counts them live, keeps them in a Parquet lake and
forwards them to ad platforms.</p>
<ul>
<li><a href="{DOCS_PATH}">API reference</a> (every operation, its key and answers)</li>
<li><a href="/openapi.json">OpenAPI 3.1 document</a></li>
<li>Health: <a href="/healthz">/healthz</a>, <a href="/readyz">/readyz</a></li>
<li>Browser SDK: <a href="/sdk/v1/convtrack.js">/sdk/v1/convtrack.js</a></li>
</ul>
<h2>Send a first event</h2>
<p>With the write key (printed at the first start; also in <code>CONVTRACK_WRITE_KEY</code>
or the data dir's <code>keys.json</code>):</p>
<pre><code>{html.escape(_first_event(url))}</code></pre>
<p>It answers <code>202 {{"status":"accepted","event_id":"…"}}</code> once the event is
durable. Then read today's counters with the server key:</p>
<pre><code>curl -sS {link}/v1/stats/conversions -H "Authorization: Bearer $SERVER_KEY"</code></pre>
</body></html>
"""


def _operations(spec: dict[str, Any]) -> list[tuple[str, str, str, dict[str, Any]]]:
    """(tag, method, path, operation) in the document's order."""
    found = []
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if isinstance(operation, dict) and "responses" in operation:
                tag = (operation.get("tags") or ["other"])[0]
                found.append((tag, method.upper(), path, operation))
    return found


def _key_of(operation: dict[str, Any]) -> str:
    role = operation.get("x-convtrack-role")
    return f"{role} key" if role else "no key"


def reference_text(spec: dict[str, Any]) -> str:
    lines = [f"{spec['info']['title']} {spec['info']['version']}: every operation.",
             "The whole document, with schemas: /openapi.json", ""]  # fmt: skip
    tags = {tag["name"]: tag.get("description", "") for tag in spec.get("tags", [])}
    operations = _operations(spec)
    for tag in dict.fromkeys(tag for tag, *_ in operations):
        lines.append(f"{tag}: {tags.get(tag, '')}".rstrip(": "))
        for op_tag, method, path, operation in operations:
            if op_tag == tag:
                summary = operation.get("summary", "")
                lines.append(f"  {method:<7} {path:<32} {summary} ({_key_of(operation)})")
        lines.append("")
    return "\n".join(lines)


def reference_html(spec: dict[str, Any]) -> str:
    e = html.escape
    tags = {tag["name"]: tag.get("description", "") for tag in spec.get("tags", [])}
    operations = _operations(spec)
    sections = []
    for tag in dict.fromkeys(tag for tag, *_ in operations):
        rows = []
        for op_tag, method, path, operation in operations:
            if op_tag != tag:
                continue
            statuses = ", ".join(operation.get("responses", {}))
            rows.append(
                f"<tr><td><code>{e(method)}</code></td><td><code>{e(path)}</code></td>"
                f"<td><b>{e(operation.get('summary', ''))}</b> ({e(_key_of(operation))})<br>"
                f"{e(operation.get('description', ''))}<br><small>answers: {e(statuses)}"
                "</small></td></tr>"
            )
        sections.append(
            f"<h2>{e(tag)}</h2><p>{e(tags.get(tag, ''))}</p>"
            "<table><tr><th>method</th><th>path</th><th>what</th></tr>" + "".join(rows) + "</table>"
        )
    title = f"{spec['info']['title']} {spec['info']['version']}"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{e(title)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>{_STYLE}</style></head>
<body>
<h1>{e(title)}</h1>
<p><a href="{LANDING_PATH}">Start</a> · the whole document, with schemas:
<a href="/openapi.json">/openapi.json</a></p>
{"".join(sections)}
</body></html>
"""


def _page(request: Request, as_html: Callable[[], str], as_text: Callable[[], str]) -> Response:
    wants_html = prefers_html(request.headers.get("accept", ""))
    body = (as_html() if wants_html else as_text()).encode()
    return Response(200, body, [(b"content-type", _HTML if wants_html else _PLAIN),
                                *_PAGE_HEADERS])  # fmt: skip


class Landing:
    """The two pages; the reference is rendered once, from the document the server serves."""

    def __init__(self) -> None:
        text = resources.files("convtrack.api").joinpath("openapi.json").read_text("utf-8")
        spec = json.loads(text)
        self._reference = (reference_html(spec), reference_text(spec))

    async def landing(self, request: Request) -> Response:
        url = base_url(request)
        return _page(request, lambda: landing_html(url), lambda: landing_text(url))

    async def reference(self, request: Request) -> Response:
        as_html, as_text = self._reference
        return _page(request, lambda: as_html, lambda: as_text)
