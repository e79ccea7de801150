"""Backend factories: which event log, hot store and lake a process uses, from settings.

``log.kind`` picks the event log and the processed log (SQLite files under the
data dir, or Kafka topics); ``hot.kind`` the hot store (SQLite or Redis);
``cold.uri`` the lake (``s3://bucket/prefix``: ``S3ColdStore``; a path:
``LocalColdStore``; ``open_cold_store``). Rejects, dead letters, the
quarantine and the deliver role's in-flight markers live with the hot store: SQLite files under
the data dir when ``hot.kind = "sqlite"``, Redis (under ``hot.redis_prefix``,
the same URL) when ``hot.kind = "redis"``, shared by every process and machine.

The Kafka and Redis classes are imported only when chosen, so the embedded
default needs neither client library; a chosen one that is not installed fails
the start in one line naming its extra (``require_backend_clients``).
``Backends`` opens each one on first use and closes what it opened, writers first.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Protocol, runtime_checkable

from convtrack.clock import Clock
from convtrack.config import Settings
from convtrack.errors import ConfigError
from convtrack.log.base import EventLog
from convtrack.log.sqlite import SqliteLog
from convtrack.observe.metrics import Metrics
from convtrack.optional import KAFKA_CLIENT, REDIS_CLIENT, S3_CLIENT
from convtrack.store.cold.base import ColdStore
from convtrack.store.cold.local import LocalColdStore
from convtrack.store.cold.s3 import S3ColdStore, is_s3_uri
from convtrack.store.deadletters.base import DeadLetterStore, store_path
from convtrack.store.deadletters.sqlite import SqliteDeadLetterStore
from convtrack.store.hot.base import HotStore
from convtrack.store.hot.sqlite import SqliteHotStore
from convtrack.store.quarantine import base as quarantine_base
from convtrack.store.quarantine.base import QuarantineStore
from convtrack.store.quarantine.sqlite import SqliteQuarantineStore
from convtrack.store.rejects.base import RejectStore
from convtrack.store.rejects.sqlite import SqliteRejectStore

Stream = str  # "events" (what collect appends) or "processed" (what process publishes)


@runtime_checkable
class StopsWrites(Protocol):
    def stop_writes(self) -> None:
        """Commit the appends already queued, refuse new ones, keep serving reads."""


def check_backend_settings(settings: Settings) -> None:
    """Fail at start, naming the setting, when a chosen backend lacks its address."""
    if settings.log.kind == "kafka" and not settings.log.kafka_bootstrap.strip():
        raise ConfigError(
            "log.kind = 'kafka' needs log.kafka_bootstrap (CONVTRACK_LOG_KAFKA_BOOTSTRAP),"
            " e.g. 'localhost:9092'"
        )
    if settings.hot.kind == "redis" and not settings.hot.redis_url.strip():
        raise ConfigError(
            "hot.kind = 'redis' needs hot.redis_url (CONVTRACK_HOT_REDIS_URL),"
            " e.g. 'redis://localhost:6379/0'"
        )


def require_backend_clients(settings: Settings) -> None:
    """Fail at start, in one line naming the extra, when a chosen backend's client is missing.

    Backends open lazily and a role retries one that failed to open: without
    this check a missing package would look like a backend that is down. Only
    looked up, not imported: the start stays as fast (boto3 alone takes 0.5 s).
    """
    if settings.log.kind == "kafka":
        KAFKA_CLIENT.check()
    if settings.hot.kind == "redis":
        REDIS_CLIENT.check()
    if is_s3_uri(settings.lake_uri):
        S3_CLIENT.check()


# A SQLite log written by another process (the roles split over processes) is polled
# this often: it bounds the latency each cross-process hop adds.
SPLIT_POLL_SECS = 0.01


def open_log(
    settings: Settings,
    stream: Stream,
    clock: Clock,
    on_commit: Callable[[int, float], None] | None = None,
    written_elsewhere: bool = False,
) -> EventLog:
    if settings.log.kind == "kafka":
        KAFKA_CLIENT.require()
        from convtrack.log.kafka import KafkaLog

        return KafkaLog.from_settings(settings.log, stream=stream, clock=clock, on_commit=on_commit)
    log_settings = settings.log
    return SqliteLog(
        settings.data_dir / "log" / f"{stream}.db",
        # The processed log is safe without an fsync per commit: a power cut that loses
        # its tail also rewinds the processor (it resumes after the last published
        # event) and the fsynced event log replays what is missing.
        synchronous=log_settings.sqlite_synchronous if stream == "events" else "normal",
        max_pending_events=log_settings.max_pending_events,
        max_commit_events=log_settings.max_commit_events,
        clock=clock,
        on_commit=on_commit,
        other_writers_poll_secs=SPLIT_POLL_SECS if written_elsewhere else 0.05,
    )


def open_hot_store(settings: Settings) -> HotStore:
    if settings.hot.kind == "redis":
        from convtrack.store.hot.redis import RedisHotStore  # needs the [redis] extra

        return RedisHotStore.from_settings(settings.hot, settings.dedup)
    return SqliteHotStore(
        settings.data_dir / "hot" / "hot.db",
        dedup_window_secs=settings.dedup.window_secs,
        minute_retention=settings.hot.minute_retention,
    )


def open_cold_store(
    uri: str,
    *,
    endpoint_url: str | None = None,
    create_bucket: bool = True,
    environ: Mapping[str, str] | None = None,
) -> ColdStore:
    """The lake at ``uri``: an S3 bucket for ``s3://bucket/prefix`` (also ``s3a://``,
    ``s3n://``), else a local directory (made if missing)."""
    if is_s3_uri(uri):
        return S3ColdStore.open(
            uri, endpoint_url=endpoint_url, create_bucket=create_bucket, environ=environ
        )
    return LocalColdStore(uri)


def open_lake(
    settings: Settings,
    environ: Mapping[str, str] | None = None,
    *,
    create_bucket: bool | None = None,
) -> ColdStore:
    """The lake of the settings; ``create_bucket=False`` to read one (never made then)."""
    return open_cold_store(
        settings.lake_uri,
        endpoint_url=settings.cold.s3_endpoint_url or None,
        create_bucket=settings.cold.create_bucket if create_bucket is None else create_bucket,
        environ=environ,
    )


def rejects_path(data_dir: Path) -> Path:
    return data_dir / "rejects" / "rejects.db"


def open_reject_store(settings: Settings, on_drop: Callable[[int], None] | None) -> RejectStore:
    limits = settings.rejects
    if settings.hot.kind == "redis":
        from convtrack.store.rejects.redis import RedisRejectStore  # needs the [redis] extra

        return RedisRejectStore(
            settings.hot.redis_url,
            prefix=settings.hot.redis_prefix,
            max_rows=limits.max_rows,
            max_body_bytes=limits.max_body_bytes,
            on_drop=on_drop,
        )
    return SqliteRejectStore(
        rejects_path(settings.data_dir),
        max_rows=limits.max_rows,
        max_body_bytes=limits.max_body_bytes,
        on_drop=on_drop,
    )


def open_dead_letter_store(settings: Settings) -> DeadLetterStore:
    """Dead letters and in-flight markers (also for ``convtrack dlq``)."""
    check_backend_settings(settings)
    if settings.hot.kind == "redis":
        from convtrack.store.deadletters.redis import RedisDeadLetterStore  # [redis] extra

        return RedisDeadLetterStore(settings.hot.redis_url, prefix=settings.hot.redis_prefix)
    return SqliteDeadLetterStore(store_path(settings.data_dir))


def open_quarantine_store(settings: Settings) -> QuarantineStore:
    """The quarantine (also for ``convtrack quarantine``): where the dead letters are."""
    check_backend_settings(settings)
    if settings.hot.kind == "redis":
        from convtrack.store.quarantine.redis import RedisQuarantineStore  # [redis] extra

        return RedisQuarantineStore(settings.hot.redis_url, prefix=settings.hot.redis_prefix)
    return SqliteQuarantineStore(quarantine_base.store_path(settings.data_dir))


class Backends:
    """The backends of one process, opened on first use and shared by its roles."""

    def __init__(
        self,
        settings: Settings,
        clock: Clock,
        metrics: Metrics,
        environ: Mapping[str, str] | None,
        split: bool = False,
    ) -> None:
        """``split``: this process runs some roles only; the others write the files too."""
        check_backend_settings(settings)
        require_backend_clients(settings)
        self._split = split
        self.settings = settings
        self._clock = clock
        self._metrics = metrics
        self._environ = environ
        self._events: EventLog | None = None
        self._processed: EventLog | None = None
        self._hot: HotStore | None = None
        self._lake: ColdStore | None = None
        self._rejects: RejectStore | None = None
        self._deadletters: DeadLetterStore | None = None
        self._quarantine: QuarantineStore | None = None
        self._opening = threading.RLock()

    # Opened under one lock: a role starting late and the health monitor may both ask
    # for a backend that failed to open before, and only one of them may open it.

    @property
    def events(self) -> EventLog:
        with self._opening:
            if self._events is None:
                self._events = open_log(
                    self.settings, "events", self._clock, self._metrics.on_log_commit, self._split
                )
            return self._events

    @property
    def processed(self) -> EventLog:
        with self._opening:
            if self._processed is None:
                self._processed = open_log(
                    self.settings, "processed", self._clock, written_elsewhere=self._split
                )
            return self._processed

    @property
    def hot(self) -> HotStore:
        with self._opening:
            if self._hot is None:
                self._hot = open_hot_store(self.settings)
            return self._hot

    @property
    def lake(self) -> ColdStore:
        with self._opening:
            if self._lake is None:
                self._lake = open_lake(self.settings, self._environ)
            return self._lake

    @property
    def rejects(self) -> RejectStore:
        with self._opening:
            if self._rejects is None:
                self._rejects = open_reject_store(self.settings, self._metrics.rejects_dropped.inc)
            return self._rejects

    @property
    def deadletters(self) -> DeadLetterStore:
        with self._opening:
            if self._deadletters is None:
                self._deadletters = open_dead_letter_store(self.settings)
            return self._deadletters

    @property
    def quarantine(self) -> QuarantineStore:
        with self._opening:
            if self._quarantine is None:
                self._quarantine = open_quarantine_store(self.settings)
            return self._quarantine

    def stop_event_writes(self) -> None:
        """Commit the appends already queued and refuse new ones (the first step of a stop)."""
        # Both logs can stop writing first and keep serving reads while the processor drains.
        if isinstance(self._events, StopsWrites):
            self._events.stop_writes()

    def close(self) -> None:
        """Close what was opened: derived stores first, the event log (the source) last."""
        if self._deadletters is not None:
            self._deadletters.close()
        if self._quarantine is not None:
            self._quarantine.close()
        if self._processed is not None:
            self._processed.close()
        if self._hot is not None:
            self._hot.close()
        if self._rejects is not None:
            self._rejects.close()
        if self._events is not None:
            self._events.close()
