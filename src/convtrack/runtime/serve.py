"""``convtrack serve``: this process's roles behind uvicorn, with a graceful stop.

All roles by default (the embedded pipeline); ``--roles`` picks a subset. A
process without ``collect`` serves only /healthz, /readyz and /metrics.

SIGTERM or SIGINT: mark the app draining (new ingests get 503), let uvicorn
stop accepting and finish in-flight requests, then let the log writer commit
everything queued, the processor drain, the lake flush, and close. Exit 0.
If a stage is still busy ``STOP_DEADLINE_SECS`` after the signal (a backend
that hangs), the process exits 0 there anyway: every 202 was durable before
it was sent, and the unfinished work after the log replays on the next start.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import socket
import threading
from types import FrameType
from typing import Any

import uvicorn

from convtrack import __version__
from convtrack.collect.protocol import ConnectionLimits, guarded_protocol
from convtrack.config import Settings
from convtrack.errors import ConfigError
from convtrack.observe.logs import configure_logging
from convtrack.runtime.embedded import Pipeline
from convtrack.runtime.node import Node
from convtrack.runtime.roles import ROLES

log = logging.getLogger("convtrack.serve")

# Supervisors commonly allow 10 s between SIGTERM and SIGKILL; the contract promises it.
STOP_DEADLINE_SECS = 9.5


def _exit_at_deadline() -> None:
    log.warning(
        "stop_deadline_reached",
        extra={"secs": STOP_DEADLINE_SECS, "detail": "unfinished work replays on the next start"},
    )
    logging.shutdown()
    os._exit(0)


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, pipeline: Node) -> None:
        super().__init__(config)
        self.pipeline = pipeline

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if not self.pipeline.app.draining:
            deadline = threading.Timer(STOP_DEADLINE_SECS, _exit_at_deadline)
            deadline.daemon = True
            deadline.start()
        self.pipeline.app.draining = True
        log.info("shutdown_requested", extra={"signal": signal.Signals(sig).name})
        super().handle_exit(sig, frame)


def _bound_address(server: uvicorn.Server, settings: Settings) -> tuple[str, int]:
    for listener in server.servers:
        for sock in listener.sockets:
            name: Any = sock.getsockname()
            return str(name[0]), int(name[1])
    return settings.server.host, settings.server.port


def _banner(pipeline: Node, host: str, port: int) -> str:
    base = f"http://{host}:{port}"
    if pipeline.roles != ROLES:
        return _roles_banner(pipeline, base)
    lines = [
        f"convtrack {__version__} ready on {base} (data dir: {pipeline.settings.data_dir})",
        f"Send events:  POST {base}/v1/track   (Authorization: Bearer <write key>)",
        f"Batches:      POST {base}/v1/batch   Health: {base}/healthz   Metrics: {base}/metrics",
    ]
    if pipeline.keys is not None and pipeline.keys.generated:
        lines.append(
            f"Keys created now and stored in {pipeline.settings.data_dir / 'keys.json'}"
            " (shown only this once):"
        )
        lines.extend(f"  {role:<6} {secret}" for role, secret in pipeline.keys.generated.items())
    return "\n".join(lines)


def _roles_banner(node: Node, base: str) -> str:
    where = f"data dir: {node.settings.data_dir}; log: {node.settings.log.kind},"
    where += f" hot store: {node.settings.hot.kind}"
    lines = [f"convtrack {__version__} roles {','.join(node.roles)} ready on {base} ({where})"]
    if node.collect is not None:
        lines.append(f"Send events:  POST {base}/v1/track   (Authorization: Bearer <write key>)")
        generated = node.collect.keys.generated
        if generated:
            lines.append(
                f"Keys created now and stored in {node.settings.data_dir / 'keys.json'}"
                " (shown only this once):"
            )
            lines.extend(f"  {role:<6} {secret}" for role, secret in generated.items())
    else:
        lines.append(f"Probes only: {base}/healthz  {base}/readyz  {base}/metrics")
    return "\n".join(lines)


def _shared_socket(settings: Settings) -> socket.socket:
    """A listening address several processes bind at once (``server.reuse_port``)."""
    host, port = settings.server.host, settings.server.port
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port} with reuse_port: {exc}") from exc
    return sock


def _build(settings: Settings, roles: tuple[str, ...]) -> Node:
    if roles == ROLES:
        return Pipeline(settings, exclusive=True)
    return Node(settings, roles, exclusive=True)


async def _serve(settings: Settings, roles: tuple[str, ...]) -> None:
    # Bound first: an address that cannot be shared fails the start before any role runs.
    sockets = [_shared_socket(settings)] if settings.server.reuse_port else None
    pipeline = _build(settings, roles)
    pipeline.start()
    # Everything built so far lives as long as the process: keep it out of the
    # collector's way, and collect young objects less often under load.
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)
    limits = ConnectionLimits(
        max_header_bytes=settings.server.max_header_bytes,
        header_timeout_secs=settings.server.header_timeout_secs,
        max_connections=settings.server.max_connections,
    )
    metrics = pipeline.app.metrics

    def count_refusal(status: int) -> None:
        metrics.count_request("other", status)

    config = uvicorn.Config(
        pipeline.app,
        host=settings.server.host,
        port=settings.server.port,
        http=guarded_protocol(limits, count_refusal),
        lifespan="off",
        access_log=False,
        log_config=None,
        server_header=False,
        proxy_headers=False,  # X-Forwarded-For is judged by collect.trusted_proxies instead
        backlog=4096,
        timeout_keep_alive=30,
        timeout_graceful_shutdown=max(1, int(settings.server.shutdown_timeout_secs) - 1),
    )
    server = _Server(config, pipeline)

    async def announce() -> None:
        while not server.started and not server.should_exit:
            await asyncio.sleep(0.01)
        if server.started:
            host, port = _bound_address(server, settings)
            print(_banner(pipeline, host, port), flush=True)
            log.info("ready", extra={"host": host, "port": port})

    announcer = asyncio.create_task(announce())
    try:
        await server.serve(sockets=sockets)
    finally:
        announcer.cancel()
        # Appends already handed to the writer finish before close() returns.
        await asyncio.get_running_loop().run_in_executor(None, pipeline.close)
        log.info("stopped")


def serve(settings: Settings, roles: tuple[str, ...] = ROLES) -> int:
    configure_logging(settings.server.log_level)
    # uvicorn re-raises the signal it caught once it has shut down; a no-op handler
    # here makes that re-raise harmless so we exit 0 after draining.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    try:
        import uvloop
    except ImportError:
        asyncio.run(_serve(settings, roles))
    else:
        uvloop.run(_serve(settings, roles))
    return 0
