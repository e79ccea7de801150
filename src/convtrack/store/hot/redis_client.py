"""The Redis client the stores that live beside the hot store share (rejects, dead letters).

Same URL and socket settings as the hot store (``hot.redis_url``), and the
same translation of redis-py errors into ours: unreachable ->
``StoreUnavailable`` (the same call may succeed later), anything else ->
``StoreError``. The redis package is imported only here, when chosen.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from importlib import resources
from typing import TYPE_CHECKING, Any

from convtrack.errors import ConfigError, StoreError, StoreUnavailable
from convtrack.optional import REDIS_CLIENT

if TYPE_CHECKING:
    import redis

CONNECT_TIMEOUT_SECS = 5
SOCKET_TIMEOUT_SECS = 30


def redis_module() -> Any:
    """redis-py, or MissingDependency naming the ``redis`` extra (an optional backend)."""
    return REDIS_CLIENT.require()


class RedisClient:
    """One connection pool and its error translation, for the store named ``what``."""

    def __init__(self, url: str, what: str) -> None:
        lib = redis_module()
        self._errors = lib.exceptions
        self._what = what
        try:
            self.client: redis.Redis = lib.Redis.from_url(
                url,
                socket_connect_timeout=CONNECT_TIMEOUT_SECS,
                socket_timeout=SOCKET_TIMEOUT_SECS,
                health_check_interval=30,
            )
        except ValueError as exc:
            raise ConfigError(f"hot.redis_url is not a Redis URL: {exc}") from exc

    def script(self, package: str, name: str) -> Any:
        """A Lua script next to ``package``'s modules, sent by EVALSHA (loaded on NOSCRIPT)."""
        text = resources.files(package).joinpath(name).read_text()
        return self.client.register_script(text)

    @contextlib.contextmanager
    def translate(self, action: str) -> Iterator[None]:
        errors = self._errors
        where = f"{self._what} (Redis)"
        try:
            yield
        except (errors.ConnectionError, errors.TimeoutError, errors.BusyLoadingError) as exc:
            raise StoreUnavailable(f"{where} unavailable during {action}: {exc}") from exc
        except errors.ReadOnlyError as exc:  # a replica, or a primary being demoted
            raise StoreUnavailable(f"{where} is read-only during {action}: {exc}") from exc
        except errors.RedisError as exc:
            raise StoreError(f"{where} {action} failed: {exc}") from exc

    def close(self) -> None:
        self.client.close()
