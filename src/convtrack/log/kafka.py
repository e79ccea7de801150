"""The distributed event log: one Kafka topic per stream, a consumer group per role.

Durability: a record counts as appended once every in-sync replica has it
(kafka_producer says how). ``append`` returns only when the broker
acknowledged every record of the call; if any was refused or timed out it
raises ``LogUnavailable`` and none of them counts as accepted. Some of those
may still be in the log (a timeout can hide a write that succeeded): the
client retries the same event_id and the processor's dedup drops the copy.

Records are keyed by ``LogRecord.key`` with Java's murmur2 partitioner, so one
user's events stay in one partition, in order, whatever client wrote them.
Offsets are per partition. The partition count is fixed at creation: adding
partitions later would move users between partitions.

Threads: a poller thread serves the producer's delivery reports and wakes the
waiting appends; a watchdog thread checks the cluster metadata each second for
``status`` (refusing appends at once while it cannot be read) and refreshes
the lag caches (kafka_lag). Record timestamps come from the injected clock
(CreateTime). Consumers: kafka_consumer (at-least-once across rebalances).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Final

from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient

from convtrack.clock import Clock
from convtrack.config import LogSettings
from convtrack.errors import ConfigError, LogError, LogUnavailable
from convtrack.log.base import EventLog, LogEntry, LogLag, LogRecord, LogStatus
from convtrack.log.kafka_client import client_settings
from convtrack.log.kafka_client_log import CLIENT_LOG_REPEAT_SECS, install_client_log_filter
from convtrack.log.kafka_consumer import KafkaConsumer
from convtrack.log.kafka_health import (
    HEALTH_INTERVAL_SECS,
    PROBE_TIMEOUT_SECS,
    Health,
    write_problem,
)
from convtrack.log.kafka_lag import LagTracker
from convtrack.log.kafka_producer import (
    PendingAppend,
    acknowledged_offsets,
    drop_unsent,
    new_producer,
    wake,
)
from convtrack.log.kafka_reader import TopicReader
from convtrack.log.kafka_topic import open_topic, require_leaders

log = logging.getLogger("convtrack.log.kafka")

LAST_ENTRY_TIMEOUT_SECS: Final = 10.0
CLOSE_FLUSH_SECS: Final = 10.0


class KafkaLog(EventLog):
    def __init__(
        self,
        bootstrap: str,
        *,
        topic: str,
        group_prefix: str,
        partitions: int,
        replication: int,
        linger_ms: float,
        clock: Clock,
        on_commit: Callable[[int, float], None] | None = None,
        delivery_timeout_secs: float = 10.0,
        max_pending_events: int = 200_000,
        setup_timeout_secs: float = 15.0,
    ) -> None:
        install_client_log_filter()  # before the first client: it may log at once
        self.topic = topic
        self.group_prefix = group_prefix
        self.clock = clock
        self._bootstrap = bootstrap
        self._on_commit = on_commit
        self._linger_ms = linger_ms
        self._delivery_timeout_secs = delivery_timeout_secs
        self._max_pending = max_pending_events
        self._admin = AdminClient(client_settings(bootstrap, f"{group_prefix}-admin"))
        self._replication = replication
        # The configured count until the topic is open; then the topic's own.
        self.partitions = partitions
        self._reader = TopicReader(bootstrap, topic, self._admin, f"{group_prefix}.reader")
        self._fatal: str | None = None
        self._producer = self._new_producer()
        self._delivery_error: tuple[str, float] | None = None
        self._health = Health(True, "ok", time.monotonic())
        self._lag = LagTracker(self._reader, clock, self.partitions)
        self._topic_open = False
        self._waiting_logged_at = -CLIENT_LOG_REPEAT_SECS
        self._open_topic(setup_timeout_secs)
        self._last_lag = LogLag(0, 0.0)
        self._consumers: weakref.WeakSet[KafkaConsumer] = weakref.WeakSet()
        self._accepting = True
        self._closed = False
        self._stopping = threading.Event()
        if self._topic_open:
            self._probe()
        self._poller = threading.Thread(
            target=self._serve_deliveries, name=f"kafka-deliveries-{topic}", daemon=True
        )
        self._watchdog = threading.Thread(
            target=self._watch, name=f"kafka-health-{topic}", daemon=True
        )
        self._poller.start()
        self._watchdog.start()

    @classmethod
    def from_settings(
        cls,
        settings: LogSettings,
        *,
        stream: str,
        clock: Clock,
        on_commit: Callable[[int, float], None] | None = None,
    ) -> KafkaLog:
        """The log of one stream: topic ``<prefix>.<stream>``, groups ``<prefix>.<group>``."""
        if stream not in ("events", "processed"):
            raise ConfigError(f"unknown log stream {stream!r} (events or processed)")
        if not settings.kafka_bootstrap.strip():
            raise ConfigError("log.kind = 'kafka' needs log.kafka_bootstrap")
        prefix = settings.kafka_topic_prefix
        return cls(
            settings.kafka_bootstrap,
            topic=f"{prefix}.{stream}",
            group_prefix=prefix,
            partitions=settings.kafka_partitions,
            replication=settings.kafka_replication,
            linger_ms=settings.kafka_linger_ms,
            clock=clock,
            on_commit=on_commit,
            max_pending_events=settings.max_pending_events,
        )

    # -- producing ----------------------------------------------------------------

    def _new_producer(self) -> Producer:
        return new_producer(
            self._bootstrap,
            f"{self.group_prefix}-producer",
            linger_ms=self._linger_ms,
            delivery_timeout_secs=self._delivery_timeout_secs,
            max_pending=self._max_pending,
            on_error=self._on_client_error,
        )

    def _on_client_error(self, error: KafkaError) -> None:
        if error.fatal():
            # An idempotent producer that lost its sequence state; the watchdog replaces it.
            self._fatal = error.str()
            log.error("kafka_producer_fatal", extra={"error": error.str()})
        else:
            log.debug("kafka_client_error", extra={"error": error.str()})

    async def append(self, records: Sequence[LogRecord]) -> list[int]:
        if not records:
            return []
        loop = asyncio.get_running_loop()
        acknowledged: asyncio.Future[None] = loop.create_future()

        def wake_caller(_: PendingAppend) -> None:
            with contextlib.suppress(RuntimeError):  # the caller's loop is gone
                loop.call_soon_threadsafe(wake, acknowledged)

        pending = self._produce(records, wake_caller)
        try:
            await asyncio.wait_for(acknowledged, self._delivery_timeout_secs + 5.0)
        except TimeoutError as exc:
            raise LogUnavailable("the broker did not answer in time") from exc
        return acknowledged_offsets(pending)

    def append_blocking(self, records: Sequence[LogRecord]) -> list[int]:
        if not records:
            return []
        acknowledged = threading.Event()
        pending = self._produce(records, lambda _: acknowledged.set())
        if not acknowledged.wait(self._delivery_timeout_secs + 5.0):
            raise LogUnavailable("the broker did not answer in time")
        return acknowledged_offsets(pending)

    def _produce(
        self, records: Sequence[LogRecord], wake: Callable[[PendingAppend], None]
    ) -> PendingAppend:
        if not self._accepting:
            raise LogUnavailable("shutting down", retry_after_secs=2)
        if self._fatal is not None:
            raise LogUnavailable(f"the Kafka producer is being replaced: {self._fatal}")
        health = self._health
        if not health.reachable:
            raise LogUnavailable(f"Kafka is unreachable: {health.detail}")
        producer = self._producer
        if len(producer) + len(records) > self._max_pending:
            raise LogUnavailable("too many pending writes", retry_after_secs=1)

        def finished(pending: PendingAppend) -> None:
            self._record_outcome(pending)
            wake(pending)

        pending = PendingAppend(len(records), finished)
        timestamp_ms = self.clock.now_us() // 1000
        try:
            for index, record in enumerate(records):
                producer.produce(
                    self.topic,
                    value=record.payload,
                    key=record.key.encode(),
                    timestamp=timestamp_ms,
                    on_delivery=functools.partial(pending.delivered, index),
                )
        except BufferError as exc:  # the earlier records may land: retried, then deduped
            raise LogUnavailable("too many pending writes", retry_after_secs=1) from exc
        except (KafkaException, RuntimeError) as exc:
            raise LogUnavailable(f"cannot produce to {self.topic}: {exc}") from exc
        return pending

    def _record_outcome(self, pending: PendingAppend) -> None:
        if pending.error is not None:
            self._delivery_error = (pending.error, time.monotonic())
            log.warning("kafka_delivery_failed", extra={"error": pending.error})
            return
        self._delivery_error = None
        ends: dict[int, int] = {}
        for partition, offset in zip(pending.partitions, pending.offsets, strict=True):
            ends[partition] = max(ends.get(partition, 0), offset + 1)
        self._lag.raise_ends(ends)
        if self._on_commit is not None:
            self._on_commit(len(pending.offsets), time.perf_counter() - pending.started)

    def _serve_deliveries(self) -> None:
        while not self._stopping.is_set():
            try:
                self._producer.poll(0.05)
            except Exception:  # a failing callback must not stop every later append
                log.exception("kafka_delivery_report_failed")

    # -- health -------------------------------------------------------------------

    def _open_topic(self, timeout_secs: float) -> None:
        """Create or find the topic. While the cluster cannot be reached the log still
        opens, unwritable (appends raise LogUnavailable, so the collector answers 503),
        and the watchdog keeps trying: a process may start before its cluster."""
        try:
            partitions = open_topic(
                self._admin, self.topic, self.partitions, self._replication, timeout_secs
            )
        except LogError as exc:
            detail = f"waiting for the Kafka cluster: {exc}"
            now = time.monotonic()
            self._health = Health(False, detail, now)
            if now - self._waiting_logged_at >= CLIENT_LOG_REPEAT_SECS:  # once a minute
                self._waiting_logged_at = now
                log.warning("kafka_waiting_for_cluster", extra={"topic": self.topic,
                                                                "error": str(exc)})  # fmt: skip
            return
        if partitions != self.partitions:
            self.partitions = partitions
            self._lag = LagTracker(self._reader, self.clock, partitions)
        self._topic_open = True
        log.info("kafka_topic_open", extra={"topic": self.topic, "partitions": partitions})

    def _require_topic(self) -> None:
        if not self._topic_open:
            raise LogError(self._health.detail)

    def partition_count(self) -> int:
        self._require_topic()
        return self.partitions

    def _watch(self) -> None:
        while not self._stopping.wait(HEALTH_INTERVAL_SECS):
            if not self._topic_open:
                self._open_topic(PROBE_TIMEOUT_SECS)
                if not self._topic_open:
                    continue
            if self._fatal is not None:
                self._replace_producer()
            self._probe()

    def _probe(self) -> None:
        """Ask the cluster for the topic's metadata; then refresh the lag caches."""
        try:
            require_leaders(self._admin, self.topic, PROBE_TIMEOUT_SECS)
        except LogError as exc:
            self._health = Health(False, str(exc), time.monotonic())
            return
        self._health = Health(True, "ok", time.monotonic())
        try:  # for lag and metrics only: not a reason to refuse writes
            self._lag.refresh()
        except LogError as exc:
            log.debug("kafka_lag_refresh_failed", extra={"error": str(exc)})

    def _replace_producer(self) -> None:
        old, self._producer = self._producer, self._new_producer()
        self._fatal = None
        drop_unsent(old)  # its appends fail (LogUnavailable) instead of hanging
        log.warning("kafka_producer_replaced", extra={"topic": self.topic})

    def status(self) -> LogStatus:
        problem = write_problem(
            closed=self._closed,
            fatal=self._fatal,
            health=self._health,
            delivery_error=self._delivery_error,
        )
        return LogStatus(
            writable=problem is None,
            detail=problem or "ok",
            pending_events=len(self._producer),
            end_offsets=self._lag.end_offsets(),
        )

    # -- reading ------------------------------------------------------------------

    def consumer(self, group: str) -> KafkaConsumer:
        self._require_topic()  # a role that reads is built again once the cluster answers
        made = KafkaConsumer(
            bootstrap=self._bootstrap,
            topic=self.topic,
            group_id=f"{self.group_prefix}.{group}",
            partitions=self.partitions,
            lag_of=self._lag_of,
        )
        self._consumers.add(made)
        return made

    def last_entries(self) -> dict[int, LogEntry]:
        """Reads each partition's record at its high watermark - 1 (no transactions here,
        so that offset always holds a record unless retention removed it)."""
        self._require_topic()
        ends = self._reader.end_offsets(range(self.partitions))
        self._lag.raise_ends(ends)
        wanted = {p: end - 1 for p, end in ends.items() if end > 0}
        return self._reader.read_first(wanted, LAST_ENTRY_TIMEOUT_SECS, strict=True)

    def lag(self, positions: Mapping[int, int]) -> LogLag:
        """Lag of every partition; a partition absent from ``positions`` counts from its
        oldest retained record. From caches (see kafka_lag); the last value measured
        when even a first read fails."""
        return self._lag_of(positions, None)

    def _lag_of(self, positions: Mapping[int, int], partitions: frozenset[int] | None) -> LogLag:
        try:
            lag = self._lag.lag(positions, partitions)
        except LogError as exc:
            log.debug("kafka_lag_unknown", extra={"error": str(exc)})
            return self._last_lag
        self._last_lag = lag
        return lag

    # -- stopping -----------------------------------------------------------------

    def stop_writes(self) -> None:
        """Refuse new appends and wait (bounded) for the pending ones; reading goes on."""
        self._accepting = False
        # The poller thread serves the reports; flushing here would serve them twice over.
        deadline = time.monotonic() + CLOSE_FLUSH_SECS
        while len(self._producer) and time.monotonic() < deadline:
            self._stopping.wait(0.01)

    def close(self) -> None:
        """Flush the producer (bounded), then close the consumers still open.

        A consumer left open (its runner still busy) is closed once its current
        call returns: it leaves its group, so its partitions move at once
        rather than after the session timeout; its next call raises LogError.
        """
        if self._closed:
            return
        self._accepting = False
        self._stopping.set()
        self._poller.join()
        self._watchdog.join(PROBE_TIMEOUT_SECS + 10.0)
        producer = self._producer
        unsent = producer.flush(CLOSE_FLUSH_SECS)
        if unsent:
            log.warning("kafka_close_unsent", extra={"topic": self.topic, "records": unsent})
            drop_unsent(producer)
        self._closed = True
        for consumer in list(self._consumers):
            consumer.close()
        self._reader.close()
