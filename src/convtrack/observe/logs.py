"""Structured logs: one JSON object per line on stderr, fields instead of f-strings."""

from __future__ import annotations

import logging
import re
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import msgspec

_STANDARD = frozenset(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}
_DIGITS = re.compile(r"\d+")
_MAX_KINDS = 1000  # kinds of message are few; the memory of them never grows without bound


def same_kind(text: str) -> str:
    """Messages that differ only in numbers (ports, offsets, timings) are the same kind."""
    return _DIGITS.sub("#", text)


class RepeatLimiter:
    """One line per kind of message per ``interval_secs``, with how many were held back.

    A stage retrying a failing batch, or a client library reconnecting to a
    broker that is away, would log the same error every attempt; ``admit(key)``
    says whether to log this one (the number of repeats held back since the
    last line of that kind, to log with it) or not (None: counted, held back).
    """

    def __init__(
        self, interval_secs: float, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self._interval = interval_secs
        self._monotonic = monotonic
        self._last: dict[str, tuple[float, int]] = {}  # kind -> (last line at, held back)
        self._lock = threading.Lock()

    def admit(self, key: str) -> int | None:
        kind = same_kind(key)
        now = self._monotonic()
        with self._lock:
            last = self._last.get(kind)
            if last is not None and now - last[0] < self._interval:
                self._last[kind] = (last[0], last[1] + 1)
                return None
            if len(self._last) > _MAX_KINDS:
                self._last.clear()
            self._last[kind] = (now, 0)
            return 0 if last is None else last[1]


class RepeatFilter(logging.Filter):
    """A ``RepeatLimiter`` on a logger: a message passes the first time, then at most
    once per ``interval_secs`` (librdkafka logs a connection failure at every
    reconnect, each second per client and broker, for as long as a broker is away)."""

    def __init__(
        self, interval_secs: float, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self._limiter = RepeatLimiter(interval_secs, monotonic)

    def filter(self, record: logging.LogRecord) -> bool:
        return self._limiter.admit(record.getMessage()) is not None


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return msgspec.json.encode(out, enc_hook=str).decode()


def configure_logging(level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger("convtrack")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
    # uvicorn's own logs go through the same formatter; access logs are off (metrics cover them).
    for name in ("uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.propagate = False
