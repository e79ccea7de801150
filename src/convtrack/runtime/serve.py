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
import threading
import time
from collections.abc import Coroutine
from types import FrameType
from typing import Any

import uvicorn

from convtrack import __version__
from convtrack.collect.protocol import ConnectionLimits, guarded_protocol
from convtrack.config import Settings
from convtrack.observe.logs import configure_logging
from convtrack.runtime.api_keys import ENV_BY_ROLE, ProvisionedKeys
from convtrack.runtime.children import ChildSpec, child_groups
from convtrack.runtime.embedded import Pipeline
from convtrack.runtime.health import ProbeApp
from convtrack.runtime.listen import BACKLOG, listen
from convtrack.runtime.node import Node
from convtrack.runtime.roles import ROLES, Roles
from convtrack.runtime.stop_signals import remember_stop_signals, stop_asked

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


def _banner(node: Node, base: str, waits: list[str]) -> str:
    """What this process is and where; ``waits``: what keeps /readyz from 200 yet."""
    settings = node.settings
    state = f"listening on {base}; waiting for {', '.join(waits)}" if waits else f"ready on {base}"
    if node.serves_all_roles:
        lines = [f"convtrack {__version__} {state} (data dir: {settings.data_dir})"]
    else:
        where = f"data dir: {settings.data_dir}; log: {settings.log.kind},"
        where += f" hot store: {settings.hot.kind}"
        lines = [f"convtrack {__version__} roles {node.roles} {state} ({where})"]
    if node.collect is None:
        lines.append(f"Probes only: {base}/healthz  {base}/readyz  {base}/metrics")
        return "\n".join(lines)
    lines.append(f"Send events:  POST {base}/v1/track   (Authorization: Bearer <write key>)")
    if node.serves_all_roles:
        lines.append(
            f"Batches:      POST {base}/v1/batch   Health: {base}/healthz   Metrics: {base}/metrics"
        )
    lines.extend(_keys_lines(node.collect.keys, settings))
    return "\n".join(lines)


def _ready_line(node: Node, base: str) -> str:
    roles = "" if node.serves_all_roles else f" roles {node.roles}"
    return f"convtrack {__version__}{roles} ready on {base}"


def _keys_lines(keys: ProvisionedKeys, settings: Settings) -> list[str]:
    """The keys created now (shown this once), else where the keys come from."""
    path = os.path.join(settings.server.data_dir, "keys.json")
    if keys.generated:
        return [
            f"Keys created now and stored in {path} (shown only this once;"
            f" `{_keys_show(settings)}` prints them again):",
            *(f"  {role:<6} {secret}" for role, secret in keys.generated.items()),
        ]
    if keys.stored_roles:
        return [f"keys: {path} — {_keys_show(settings)}"]
    return [f"keys: from the environment ({', '.join(ENV_BY_ROLE.values())})"]


def _keys_show(settings: Settings) -> str:
    default = Settings().server.data_dir
    where = "" if settings.server.data_dir == default else f" --data-dir {settings.data_dir}"
    return f"convtrack keys show{where}"


def _build(settings: Settings, roles: Roles, child: ChildSpec | None) -> Node:
    if child is not None:  # its parent holds the locks, and it inherits them
        node = Node(settings, roles, store_keys=False)
        assert isinstance(node.app, ProbeApp)
        node.app.child_token = child.token
        return node
    if roles.full:
        groups = child_groups(settings)
        if groups:
            if any(group.delivers for group in groups):
                from convtrack.runtime.deliveries import check_destinations

                check_destinations(settings, os.environ)
            return Node(settings, roles, exclusive=True, store_keys=False, child_roles=groups)
        return Pipeline(settings, exclusive=True, store_keys=False)
    return Node(settings, roles, exclusive=True, store_keys=False)


def settle_heap() -> None:
    """Everything built so far lives as long as the process: keep it out of the cyclic
    collector's way, and collect young objects less often under load (the default
    thresholds cost the processor a fifth of its time, walking long-lived state)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)


READY_POLL_SECS = 0.2
FIRST_CHECK_WAIT_SECS = 1.0  # how long the banner waits for the backends' first answers


async def _announce(
    server: uvicorn.Server, node: Node, settings: Settings, child: ChildSpec | None
) -> None:
    """The banner once listening; while /readyz's condition does not hold, what it waits
    for, then a ``ready`` line once it does. A child tells its parent its port instead."""
    while not server.started and not server.should_exit:
        await asyncio.sleep(0.01)
    if not server.started:
        return
    if stop_asked.is_set():  # while starting, before uvicorn listened for it: stop now
        server.handle_exit(signal.SIGTERM, None)
    host, port = _bound_address(server, settings)
    if child is not None:
        os.write(child.ready_fd, f"{port}\n".encode())
        os.close(child.ready_fd)
        return
    base = f"http://{host}:{port}"
    # Backends that answer at once make no "waiting for … (not checked yet)" line; one
    # that hangs is named as waited for after a second.
    deadline = time.monotonic() + FIRST_CHECK_WAIT_SECS
    while not node.monitor.checked and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    waits = node.waiting_for()
    print(_banner(node, base, waits), flush=True)
    if node.children is not None and not server.should_exit:
        node.children.start()  # after the banner: theirs are not the first lines a user reads
    if waits:
        log.info("listening", extra={"host": host, "port": port, "waiting_for": waits})
    while waits and not server.should_exit:
        await asyncio.sleep(READY_POLL_SECS)
        waits = node.waiting_for()
        if not waits:
            print(_ready_line(node, base), flush=True)
    if not waits:
        log.info("ready", extra={"host": host, "port": port})


async def _serve(settings: Settings, roles: Roles, child: ChildSpec | None = None) -> None:
    # Bound first: an address that is taken fails the start before any key or role exists.
    sockets = listen(settings)
    try:
        pipeline = _build(settings, roles, child)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    try:
        pipeline.store_generated_keys()
    except BaseException:
        pipeline.close()
        raise
    pipeline.start()
    settle_heap()
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
        backlog=BACKLOG,
        timeout_keep_alive=30,
        timeout_graceful_shutdown=max(1, int(settings.server.shutdown_timeout_secs) - 1),
    )
    server = _Server(config, pipeline)
    announcer = asyncio.create_task(_announce(server, pipeline, settings, child))
    try:
        await server.serve(sockets=sockets)
    finally:
        announcer.cancel()
        # Appends already handed to the writer finish before close() returns.
        await asyncio.get_running_loop().run_in_executor(None, pipeline.close)
        log.info("stopped")


def serve(settings: Settings, roles: Roles = ROLES) -> int:
    return _run(_serve(settings, roles), settings)


def serve_child(spec: ChildSpec) -> int:
    """A child process of ``serve`` (runtime/child.py): its roles on a loopback port."""
    return _run(_serve(spec.settings, Roles(spec.roles), spec), spec.settings)


def _run(main: Coroutine[Any, Any, None], settings: Settings) -> int:
    configure_logging(settings.server.log_level)
    remember_stop_signals()
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
    else:
        uvloop.run(main)
    return 0
