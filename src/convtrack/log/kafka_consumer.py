"""One member of a Kafka consumer group, behind the log's ``LogConsumer`` port.

Partitions are handed out by the group (the classic, eager protocol): when
several processes share a group, each reads some partitions. Delivery is
at-least-once across rebalances: a partition that moves to another member is
read from the group's committed offset, so whatever its previous owner
handled but had not committed yet is handled again. Records of a partition
this member lost are dropped, never returned, even when already fetched.
A member is dropped from the group when it stops heartbeating for 10 s (a
killed process) or does not poll for 5 min (librdkafka's max.poll.interval);
a commit it makes afterwards may rewind the new owner: more replay, never loss.

``seek`` of an assigned partition takes effect at once; a seek of a partition
not assigned yet is applied when the next assignment arrives (the processor
seeks to the positions it keeps with its effects before its first poll).
After that assignment the remaining seeks are dropped: partitions arriving in
later rebalances start at the group's committed offsets.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Concatenate, Final, ParamSpec, TypeVar

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from convtrack.errors import LogError
from convtrack.log.base import LogConsumer, LogEntry, LogLag
from convtrack.log.kafka_client import REQUEST_TIMEOUT_SECS, client_settings, entry_of

log = logging.getLogger("convtrack.log.kafka")

# A member that stops heartbeating (a killed process) loses its partitions after this.
SESSION_TIMEOUT_MS: Final = 10_000
JOIN_TIMEOUT_SECS: Final = 10.0

LagOf = Callable[[Mapping[int, int], "frozenset[int] | None"], LogLag]
_P = ParamSpec("_P")
_R = TypeVar("_R")


def _exclusive(
    method: Callable[Concatenate[KafkaConsumer, _P], _R],
) -> Callable[Concatenate[KafkaConsumer, _P], _R]:
    """One call at a time: the owner's thread, or the log closing what is left open."""

    def locked(self: KafkaConsumer, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        with self._lock:
            return method(self, *args, **kwargs)

    locked.__doc__ = method.__doc__
    return locked


class KafkaConsumer(LogConsumer):
    def __init__(
        self,
        *,
        bootstrap: str,
        topic: str,
        group_id: str,
        partitions: int,
        lag_of: LagOf,
        join_timeout_secs: float = JOIN_TIMEOUT_SECS,
    ) -> None:
        self._topic = topic
        self._partitions = partitions
        self._lag_of = lag_of
        self._consumer = Consumer(
            {
                **client_settings(bootstrap, group_id),
                "group.id": group_id,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "session.timeout.ms": SESSION_TIMEOUT_MS,
                "heartbeat.interval.ms": 1000,
                "fetch.wait.max.ms": 100,
            }
        )
        self._closed = False
        self._lock = threading.RLock()
        # The partitions owned now, each with the number of the assignment that gave it:
        # a partition revoked and given back between two reads (one poll can hold both)
        # gets a new number.
        self._epochs: dict[int, int] = {}
        self._epochs_view: dict[int, int] = {}
        self._assignments = 0
        self._ever_assigned = False
        self._buffer: list[LogEntry] = []  # fetched, not returned yet
        self._positions: dict[int, int] = {}  # next offset poll returns, per partition
        self._start_positions: dict[int, int] = {}  # committed at assignment (-1: none)
        self._pending_seeks: dict[int, int] = {}
        self._consumer.subscribe(
            [topic], on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_revoke
        )
        self._join(join_timeout_secs)

    # -- group membership ---------------------------------------------------------

    def _join(self, timeout_secs: float) -> None:
        """Wait for the first assignment, so that the first poll finds data at once."""
        deadline = time.monotonic() + timeout_secs
        while not self._ever_assigned and time.monotonic() < deadline:
            self._fetch(0.1)
        if not self._ever_assigned:
            log.warning("kafka_group_join_slow", extra={"topic": self._topic})

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            if tp.partition in self._pending_seeks:
                tp.offset = self._pending_seeks[tp.partition]
                self._positions[tp.partition] = tp.offset
            self._assignments += 1
            self._epochs[tp.partition] = self._assignments
        self._pending_seeks.clear()
        self._ever_assigned = True
        consumer.assign(partitions)
        self._epochs_view = dict(self._epochs)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        lost = {tp.partition for tp in partitions}
        for partition in lost:
            self._epochs.pop(partition, None)
        self._epochs_view = dict(self._epochs)
        self._buffer = [e for e in self._buffer if e.partition not in lost]
        for partition in lost:
            self._positions.pop(partition, None)
            self._start_positions.pop(partition, None)
        # The wrapper unassigns them after this returns.

    # -- reading ------------------------------------------------------------------

    @_exclusive
    def poll(self, max_records: int, timeout_secs: float) -> list[LogEntry]:
        self._check_open()
        deadline = time.monotonic() + timeout_secs
        while not self._buffer:
            if self._pending_seeks:
                self._retry_seeks()
            remaining = max(deadline - time.monotonic(), 0.0)
            # Short waits while a seek is refused, so that it is tried again soon.
            self._fetch(min(remaining, 0.05) if self._pending_seeks else remaining)
            if remaining <= 0:
                break
        if len(self._buffer) < max_records:
            self._fetch_ready(max_records - len(self._buffer))
        taken, self._buffer = self._buffer[:max_records], self._buffer[max_records:]
        for entry in taken:
            self._positions[entry.partition] = entry.offset + 1
        return taken

    def _fetch(self, timeout_secs: float) -> None:
        """Wait up to ``timeout_secs`` for one record (rebalance callbacks run in here)."""
        try:
            message = self._consumer.poll(timeout_secs)
        except KafkaException as exc:
            raise LogError(f"reading {self._topic} failed: {exc}") from exc
        if message is not None:
            self._accept(message)

    def _fetch_ready(self, count: int) -> None:
        """Take records already fetched, without waiting."""
        try:
            messages = self._consumer.consume(count, 0)
        except KafkaException as exc:
            raise LogError(f"reading {self._topic} failed: {exc}") from exc
        for message in messages:
            self._accept(message)

    def _accept(self, message: Message) -> None:
        error = message.error()
        if error is not None:
            if error.fatal():
                raise LogError(f"reading {self._topic} failed for good: {error.str()}")
            # Transient (a broker away, a rebalance): librdkafka retries by itself.
            if error.code() != KafkaError._PARTITION_EOF:
                log.debug("kafka_consume_error", extra={"error": error.str()})
            return
        partition = message.partition()
        if partition not in self._epochs or partition in self._pending_seeks:
            return  # lost in a rebalance, or fetched before a seek took effect
        self._buffer.append(entry_of(message))

    # -- positions ----------------------------------------------------------------

    @_exclusive
    def commit(self, positions: Mapping[int, int], *, wait: bool = True) -> None:
        self._check_open()
        offsets = [TopicPartition(self._topic, p, o) for p, o in positions.items()]
        if not offsets:
            return
        if not wait:
            # A synchronous commit can wait for a coordinator up to the socket timeout
            # (a minute) while a broker restarts; this one only queues the request.
            with contextlib.suppress(KafkaException):
                self._consumer.commit(offsets=offsets, asynchronous=True)
            return
        try:
            results = self._consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            raise LogError(f"committing offsets of {self._topic} failed: {exc}") from exc
        failed = [tp for tp in results or [] if tp.error is not None]
        if failed:
            raise LogError(f"committing offsets of {self._topic} failed: {failed[0].error}")

    @_exclusive
    def committed(self) -> dict[int, int]:
        self._check_open()
        return self._committed(range(self._partitions))

    def _committed(self, partitions: range | set[int]) -> dict[int, int]:
        asked = [TopicPartition(self._topic, p) for p in partitions]
        if not asked:
            return {}
        try:
            answered = self._consumer.committed(asked, timeout=REQUEST_TIMEOUT_SECS)
        except KafkaException as exc:
            raise LogError(f"reading committed offsets of {self._topic} failed: {exc}") from exc
        return {tp.partition: tp.offset for tp in answered if tp.offset >= 0}

    @_exclusive
    def seek(self, positions: Mapping[int, int]) -> None:
        self._check_open()
        moved = set(positions)
        self._buffer = [e for e in self._buffer if e.partition not in moved]
        for partition, offset in positions.items():
            self._positions[partition] = offset
            self._pending_seeks[partition] = offset
        self._retry_seeks()

    def _retry_seeks(self) -> None:
        """Seek assigned partitions; a partition whose fetcher is starting refuses for a moment."""
        for partition in self._epochs.keys() & self._pending_seeks.keys():
            offset = self._pending_seeks[partition]
            try:
                self._consumer.seek(TopicPartition(self._topic, partition, offset))
            except KafkaException:
                continue  # tried again on the next poll; its records are held back until then
            del self._pending_seeks[partition]

    @_exclusive
    def lag(self) -> LogLag:
        """Lag of the assigned partitions (before the first assignment: of the whole topic)."""
        if self._closed:
            return LogLag(0, 0.0)
        partitions = set(self._epochs) if self._ever_assigned else set(range(self._partitions))
        if not partitions:
            return LogLag(0, 0.0)
        positions = {p: o for p, o in self._pending_seeks.items() if p in partitions}
        positions.update({p: o for p, o in self._positions.items() if p in partitions})
        unknown = partitions - set(positions)
        if unknown - set(self._start_positions):
            try:
                committed = self._committed(unknown)
                self._start_positions.update({p: committed.get(p, -1) for p in unknown})
            except LogError:
                pass  # asked again next time; meanwhile they count from the oldest record
        positions.update(
            {p: o for p, o in self._start_positions.items() if p in unknown and o >= 0}
        )
        return self._lag_of(positions, frozenset(partitions))

    def assignment(self) -> frozenset[int]:
        """The partitions this member owns now (a snapshot other threads may read)."""
        return frozenset(self._epochs_view)

    def assignment_epochs(self) -> Mapping[int, int]:
        """A snapshot other threads may read (see LogConsumer)."""
        return self._epochs_view

    # -- lifecycle ----------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise LogError(f"the consumer of {self._topic} is closed")

    def close(self, wait_secs: float = 5.0) -> None:
        """Leave the group now, so its partitions move to the other members at once.

        Waits up to ``wait_secs`` for a call in progress on another thread.
        """
        if not self._lock.acquire(timeout=wait_secs):
            log.warning("kafka_consumer_busy_at_close", extra={"topic": self._topic})
            return
        try:
            if self._closed:
                return
            self._closed = True
            self._buffer.clear()
            try:
                self._consumer.close()
            except (KafkaException, RuntimeError) as exc:
                log.warning("kafka_consumer_close_failed", extra={"error": str(exc)})
        finally:
            self._lock.release()
