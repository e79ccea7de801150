"""A bare ASGI stub: the floor convtrack's ingest rate is compared against.

It does the least any JSON ingest endpoint must do: read the whole body, decode
it with ``msgspec.json.decode`` and answer 202 with a small JSON body. No auth,
no validation, no log. It runs on the same server software and settings as
``convtrack serve`` (see ``convtrack.runtime.serve._serve``): uvicorn with
``http="httptools"``, under ``uvloop.run``, lifespan off, access log off, no
server header, backlog 4096, keep-alive 30 s.

    .venv/bin/python bench/stub_app.py --port 8099
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import msgspec
import uvicorn

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]

_decode = msgspec.json.decode
_encode = msgspec.json.Encoder().encode
_CONTENT_TYPE = (b"content-type", b"application/json")


async def app(
    scope: Scope,
    receive: Callable[[], Awaitable[Message]],
    send: Callable[[Message], Awaitable[None]],
) -> None:
    if scope["type"] != "http":
        return
    chunks: list[bytes] = []
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    raw = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    try:
        body = _decode(raw)
    except msgspec.DecodeError:
        status, out = 400, b'{"error":"invalid_json"}'
    else:
        event_id = body.get("event_id") if isinstance(body, dict) else None
        status, out = 202, _encode({"status": "accepted", "event_id": event_id})
    headers = [_CONTENT_TYPE, (b"content-length", str(len(out)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": out})


def config(host: str, port: int) -> uvicorn.Config:
    """The uvicorn settings ``convtrack serve`` uses, around the stub."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http="httptools",
        lifespan="off",
        access_log=False,
        log_config=None,
        server_header=False,
        backlog=4096,
        timeout_keep_alive=30,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    server = uvicorn.Server(config(args.host, args.port))
    try:
        import uvloop
    except ImportError:
        asyncio.run(server.serve())
    else:
        uvloop.run(server.serve())


if __name__ == "__main__":
    main()
