"""Kafka plumbing the log shares between its producer and its consumers.

Client settings, the topic's creation, and ``TopicReader``: watermarks of the
topic's partitions and single records read at given offsets (for
``last_entries`` and the age part of ``lag``), safe to call from any thread.
The reader's consumer is assigned partitions directly: it never joins a group.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any, Final

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic, OffsetSpec  # type: ignore[attr-defined]

from convtrack.errors import LogError
from convtrack.log.base import LogEntry
from convtrack.observe.logs import RepeatFilter

log = logging.getLogger("convtrack.log.kafka")
CLIENT_LOG_REPEAT_SECS: Final = 60.0
_DIGITS = re.compile(r"\d+")


client_log = logging.getLogger("convtrack.log.kafka.client")  # librdkafka's own lines
client_log.addFilter(RepeatFilter(CLIENT_LOG_REPEAT_SECS))

REQUEST_TIMEOUT_SECS: Final = 5.0
_LEADER_MOVING: Final = frozenset(
    {
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.UNKNOWN_TOPIC_OR_PART,
    }
)
# Partitions of a topic are created once; growing them later would move keys (and
# so one user's events) to other partitions, so convtrack never adds partitions.


def client_settings(bootstrap: str, client_id: str) -> dict[str, Any]:
    """What every client of the log shares; librdkafka's own logs go to Python logging."""
    return {
        "bootstrap.servers": bootstrap,
        "client.id": client_id,
        "logger": client_log,
        # A missing topic is created by the log with its own partitions and
        # replication, never implicitly with the broker's defaults.
        "allow.auto.create.topics": False,
        # Reconnect within a second of a broker's return (librdkafka's default backs off
        # to 10 s), so readiness and appends recover by themselves promptly.
        "reconnect.backoff.max.ms": 1000,
    }


def min_insync_replicas(replication: int) -> int:
    """acks=all waits for this many replicas: 2 of 3 tolerates one broker down."""
    return 2 if replication >= 3 else 1


def ensure_topic(
    admin: AdminClient, topic: str, partitions: int, replication: int, timeout_secs: float
) -> int:
    """Create ``topic`` when missing; returns its partition count (which may differ)."""
    new = NewTopic(
        topic,
        num_partitions=partitions,
        replication_factor=replication,
        config={"min.insync.replicas": str(min_insync_replicas(replication))},
    )
    try:
        futures = admin.create_topics(
            [new], operation_timeout=timeout_secs, request_timeout=timeout_secs
        )
        futures[topic].result(timeout=timeout_secs + 1)
    except KafkaException as exc:
        error = exc.args[0] if exc.args else None
        # Another process (or an earlier start) created it first: that is fine.
        if not (isinstance(error, KafkaError) and error.code() == KafkaError.TOPIC_ALREADY_EXISTS):
            raise LogError(f"cannot create the Kafka topic {topic}: {exc}") from exc
    except TimeoutError as exc:
        raise LogError(f"creating the Kafka topic {topic} timed out") from exc
    # Metadata (and the partitions' leaders) of a new topic lag its creation a moment.
    deadline = time.monotonic() + timeout_secs
    while True:
        leaders = partition_leaders(admin, topic, timeout_secs)
        ready = bool(leaders) and min(leaders.values()) >= 0
        if ready or time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    if not ready:
        raise LogError(f"the Kafka topic {topic} has no leader for some partitions: {leaders}")
    if len(leaders) != partitions:
        log.warning(
            "kafka_partitions_differ",
            extra={"topic": topic, "partitions": len(leaders), "configured": partitions},
        )
    return len(leaders)


def partition_leaders(admin: AdminClient, topic: str, timeout_secs: float) -> dict[int, int]:
    """Each partition's leader broker per the cluster metadata (-1: none; {}: no topic)."""
    try:
        metadata = admin.list_topics(topic=topic, timeout=timeout_secs)
    except KafkaException as exc:
        raise LogError(f"the Kafka cluster metadata is unreachable: {exc}") from exc
    described = metadata.topics.get(topic)
    if described is None or described.error is not None:
        return {}
    return {int(p): int(meta.leader) for p, meta in described.partitions.items()}


def entry_of(message: Message) -> LogEntry:
    """A consumed Kafka record as a log entry (the record's timestamp is its log time)."""
    _kind, millis = message.timestamp()
    key = message.key()
    return LogEntry(
        partition=message.partition() or 0,
        offset=message.offset() or 0,
        key=key.decode() if key is not None else "",
        payload=message.value() or b"",
        logged_at_us=max(millis, 0) * 1000,
    )


class TopicReader:
    """Watermarks and point reads of one topic, for any thread (one read at a time)."""

    def __init__(self, bootstrap: str, topic: str, admin: AdminClient, group_id: str) -> None:
        self._bootstrap = bootstrap
        self._topic = topic
        self._admin = admin
        self._group_id = group_id
        self._consumer: Consumer | None = None
        self._closed = False
        self._lock = threading.Lock()

    def end_offsets(self, partitions: Iterable[int]) -> dict[int, int]:
        """The high watermark (next offset to be written) of each partition."""
        return self._list_offsets(partitions, OffsetSpec.latest())  # type: ignore[no-untyped-call]

    def start_offsets(self, partitions: Iterable[int]) -> dict[int, int]:
        """The oldest offset still retained in each partition."""
        return self._list_offsets(partitions, OffsetSpec.earliest())  # type: ignore[no-untyped-call]

    def _list_offsets(self, partitions: Iterable[int], spec: OffsetSpec) -> dict[int, int]:
        wanted = {TopicPartition(self._topic, p): spec for p in partitions}
        if not wanted:
            return {}
        # Right after a topic's creation or a leader change, the client's metadata may
        # name an old leader for a moment: retried briefly.
        deadline = time.monotonic() + REQUEST_TIMEOUT_SECS
        while True:
            try:
                futures = self._admin.list_offsets(wanted, request_timeout=REQUEST_TIMEOUT_SECS)
                return {
                    tp.partition: int(future.result(timeout=REQUEST_TIMEOUT_SECS + 1).offset)
                    for tp, future in futures.items()
                }
            except KafkaException as exc:
                error = exc.args[0] if exc.args else None
                retriable = isinstance(error, KafkaError) and error.code() in _LEADER_MOVING
                if not retriable or time.monotonic() >= deadline:
                    raise LogError(f"cannot read the offsets of {self._topic}: {exc}") from exc
                time.sleep(0.05)
            except TimeoutError as exc:
                raise LogError(f"reading the offsets of {self._topic} timed out") from exc

    def read_first(
        self, positions: Mapping[int, int], timeout_secs: float, *, strict: bool = False
    ) -> dict[int, LogEntry]:
        """The first record at or after each position (absent: none there).

        ``strict``: raise LogError when a partition neither gave a record nor
        reached its end within the timeout (otherwise it is just absent).
        """
        if not positions:
            return {}
        with self._lock:
            if self._closed:
                raise LogError(f"the reader of {self._topic} is closed")
            consumer = self._reader()
            consumer.assign([TopicPartition(self._topic, p, o) for p, o in positions.items()])
            waiting = set(positions)
            try:
                found = self._read_one_each(consumer, waiting, timeout_secs)
            except KafkaException as exc:
                raise LogError(f"cannot read from {self._topic}: {exc}") from exc
            finally:
                consumer.unassign()
        if strict and waiting:
            raise LogError(f"reading {self._topic} partitions {sorted(waiting)} timed out")
        return found

    @staticmethod
    def _read_one_each(
        consumer: Consumer, waiting: set[int], timeout_secs: float
    ) -> dict[int, LogEntry]:
        """Poll until each waiting partition gave a record or its end; leaves the rest."""
        found: dict[int, LogEntry] = {}
        deadline = time.monotonic() + timeout_secs
        while waiting:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            message = consumer.poll(remaining)
            if message is None:
                continue
            partition = message.partition()
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF and partition is not None:
                    waiting.discard(partition)  # at the end: nothing there
                continue
            if partition in waiting:
                found[partition] = entry_of(message)
                waiting.discard(partition)
        return found

    def _reader(self) -> Consumer:
        if self._consumer is None:
            self._consumer = Consumer(
                {
                    **client_settings(self._bootstrap, f"{self._group_id}-reader"),
                    "group.id": self._group_id,  # required by the client; never joined
                    "enable.auto.commit": False,
                    "enable.partition.eof": True,
                    "auto.offset.reset": "earliest",
                    "fetch.wait.max.ms": 50,
                }
            )
        return self._consumer

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._consumer is not None:
                self._consumer.close()
                self._consumer = None
