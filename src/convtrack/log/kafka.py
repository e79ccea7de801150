"""The distributed event log: one Kafka topic per stream, a consumer group per role.

Durability: the producer is idempotent (``enable.idempotence``) with
``acks=all``, so a record counts as appended only once every in-sync replica
has it (topics are created with ``min.insync.replicas`` 2 when replicated 3+
times), and the producer's own retries never write a record twice. Records
wait up to ``linger.ms`` to share a request (lz4-compressed). ``append``
returns only when the broker acknowledged every record of the call; if any
was refused or timed out it raises ``LogUnavailable`` and none of them counts
as accepted. Some of those may still be in the log (a timeout can hide a
write that succeeded): the client retries the same event_id and the
processor's dedup drops the copy.

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

from confluent_kafka import KafkaError, KafkaException, Message, Producer
from confluent_kafka.admin import AdminClient

from convtrack.clock import Clock
from convtrack.config import LogSettings
from convtrack.errors import ConfigError, LogError, LogUnavailable
from convtrack.log.base import EventLog, LogEntry, LogLag, LogRecord, LogStatus
from convtrack.log.kafka_admin import (
    CLIENT_LOG_REPEAT_SECS,
    TopicReader,
    client_settings,
    ensure_topic,
    partition_leaders,
)
from convtrack.log.kafka_consumer import KafkaConsumer
from convtrack.log.kafka_lag import LagTracker

log = logging.getLogger("convtrack.log.kafka")

HEALTH_INTERVAL_SECS: Final = 1.0
PROBE_TIMEOUT_SECS: Final = 2.0
# A failed delivery keeps status unwritable until a later one succeeds, or this long
# once the cluster answers again (readiness must not stay down with no traffic).
DELIVERY_ERROR_HOLD_SECS: Final = 3.0
LAST_ENTRY_TIMEOUT_SECS: Final = 10.0
CLOSE_FLUSH_SECS: Final = 10.0


class _Append:
    """The delivery reports of one ``append`` call, gathered on the poller thread."""

    __slots__ = ("done", "error", "lock", "offsets", "partitions", "remaining", "started")

    def __init__(self, count: int, done: Callable[[_Append], None]) -> None:
        self.lock = threading.Lock()
        self.offsets = [-1] * count
        self.partitions = [-1] * count
        self.remaining = count
        self.error: str | None = None
        self.started = time.perf_counter()
        self.done = done

    def delivered(self, index: int, error: KafkaError | None, message: Message) -> None:
        # Usually the poller thread; while a failed producer is replaced, also another.
        with self.lock:
            if error is not None:
                self.error = self.error or error.str()
            else:
                self.offsets[index] = message.offset() or 0
                self.partitions[index] = message.partition() or 0
            self.remaining -= 1
            finished = self.remaining == 0
        if finished:
            self.done(self)


class _Health:
    __slots__ = ("checked_at", "detail", "reachable")

    def __init__(self, reachable: bool, detail: str, checked_at: float) -> None:
        self.reachable = reachable
        self.detail = detail
        self.checked_at = checked_at


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


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
        self._health = _Health(True, "ok", time.monotonic())
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
        return Producer(
            {
                **client_settings(self._bootstrap, f"{self.group_prefix}-producer"),
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": self._linger_ms,
                "compression.type": "lz4",
                "partitioner": "murmur2_random",
                # Every record gets a report within this time: the append's upper bound.
                "message.timeout.ms": int(self._delivery_timeout_secs * 1000),
                "queue.buffering.max.messages": self._max_pending,
                "error_cb": self._on_client_error,
            }
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

        def wake(_: _Append) -> None:
            with contextlib.suppress(RuntimeError):  # the caller's loop is gone
                loop.call_soon_threadsafe(_wake, acknowledged)

        pending = self._produce(records, wake)
        try:
            await asyncio.wait_for(acknowledged, self._delivery_timeout_secs + 5.0)
        except TimeoutError as exc:
            raise LogUnavailable("the broker did not answer in time") from exc
        return self._outcome(pending)

    def append_blocking(self, records: Sequence[LogRecord]) -> list[int]:
        if not records:
            return []
        acknowledged = threading.Event()
        pending = self._produce(records, lambda _: acknowledged.set())
        if not acknowledged.wait(self._delivery_timeout_secs + 5.0):
            raise LogUnavailable("the broker did not answer in time")
        return self._outcome(pending)

    def _produce(self, records: Sequence[LogRecord], wake: Callable[[_Append], None]) -> _Append:
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

        def finished(pending: _Append) -> None:
            self._record_outcome(pending)
            wake(pending)

        pending = _Append(len(records), finished)
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

    def _record_outcome(self, pending: _Append) -> None:
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

    @staticmethod
    def _outcome(pending: _Append) -> list[int]:
        if pending.error is not None:
            raise LogUnavailable(f"the broker did not acknowledge the records: {pending.error}")
        return pending.offsets

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
            # A quick look first: an unreachable cluster should not hold the start up.
            partition_leaders(self._admin, self.topic, min(timeout_secs, PROBE_TIMEOUT_SECS))
            partitions = ensure_topic(
                self._admin, self.topic, self.partitions, self._replication, timeout_secs
            )
        except LogError as exc:
            detail = f"waiting for the Kafka cluster: {exc}"
            now = time.monotonic()
            self._health = _Health(False, detail, now)
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
            leaders = partition_leaders(self._admin, self.topic, PROBE_TIMEOUT_SECS)
            if not leaders:
                raise LogError(f"the topic {self.topic} is missing from the cluster metadata")
            leaderless = sorted(p for p, leader in leaders.items() if leader < 0)
            if leaderless:
                raise LogError(f"partitions {leaderless} of {self.topic} have no leader")
        except LogError as exc:
            self._health = _Health(False, str(exc), time.monotonic())
            return
        self._health = _Health(True, "ok", time.monotonic())
        try:  # for lag and metrics only: not a reason to refuse writes
            self._lag.refresh()
        except LogError as exc:
            log.debug("kafka_lag_refresh_failed", extra={"error": str(exc)})

    def _replace_producer(self) -> None:
        old, self._producer = self._producer, self._new_producer()
        self._fatal = None
        # Its unsent records fail their appends (LogUnavailable) instead of hanging.
        with contextlib.suppress(KafkaException, RuntimeError):
            old.purge()
            old.flush(1.0)
        log.warning("kafka_producer_replaced", extra={"topic": self.topic})

    def status(self) -> LogStatus:
        health = self._health
        problem: str | None = None
        if self._closed:
            problem = "closed"
        elif self._fatal is not None:
            problem = f"the Kafka producer failed: {self._fatal}"
        elif not health.reachable:
            problem = f"Kafka is unreachable: {health.detail}"
        elif self._delivery_error is not None:
            error, at = self._delivery_error
            if time.monotonic() - at < DELIVERY_ERROR_HOLD_SECS or health.checked_at <= at:
                problem = f"the last delivery failed: {error}"
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
            # Their appends fail (LogUnavailable) rather than wait for ever.
            with contextlib.suppress(KafkaException, RuntimeError):
                producer.purge()
                producer.flush(1.0)
        self._closed = True
        for consumer in list(self._consumers):
            consumer.close()
        self._reader.close()
