"""The Kafka log's producer, and the delivery reports of one append gathered into one answer.

The producer is idempotent (``enable.idempotence``) with ``acks=all``, so a
record counts as appended only once every in-sync replica has it (topics are
created with ``min.insync.replicas`` 2 when replicated 3+ times, see
kafka_topic), and the producer's own retries never write a record twice.
Records wait up to ``linger.ms`` to share a request (lz4-compressed).

``append`` produces its records, then waits until the broker has reported on
every one of them: ``PendingAppend`` collects those reports (on the poller
thread) and calls back once the last has come; ``acknowledged_offsets`` turns
it into the append's answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from convtrack.errors import LogUnavailable
from convtrack.log.kafka_client import client_settings


def new_producer(
    bootstrap: str,
    client_id: str,
    *,
    linger_ms: float,
    delivery_timeout_secs: float,
    max_pending: int,
    on_error: Callable[[KafkaError], None],
) -> Producer:
    """An idempotent producer with acks=all, lz4 and Java's murmur2 partitioner."""
    return Producer(
        {
            **client_settings(bootstrap, client_id),
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": linger_ms,
            "compression.type": "lz4",
            "partitioner": "murmur2_random",
            # Every record gets a report within this time: the append's upper bound.
            "message.timeout.ms": int(delivery_timeout_secs * 1000),
            "queue.buffering.max.messages": max_pending,
            "error_cb": on_error,
        }
    )


def drop_unsent(producer: Producer) -> None:
    """Purge what the producer still holds: those appends fail (LogUnavailable) rather
    than wait for ever."""
    with contextlib.suppress(KafkaException, RuntimeError):
        producer.purge()
        producer.flush(1.0)


class PendingAppend:
    """The delivery reports of one ``append`` call, gathered on the poller thread."""

    __slots__ = ("done", "error", "lock", "offsets", "partitions", "remaining", "started")

    def __init__(self, count: int, done: Callable[[PendingAppend], None]) -> None:
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


def acknowledged_offsets(pending: PendingAppend) -> list[int]:
    """The offsets of a finished append; LogUnavailable if any record was refused."""
    if pending.error is not None:
        raise LogUnavailable(f"the broker did not acknowledge the records: {pending.error}")
    return pending.offsets


def wake(future: asyncio.Future[None]) -> None:
    """Resolve an async append's future, on its own event loop."""
    if not future.done():
        future.set_result(None)
