"""``TopicReader``: watermarks of the log topic's partitions and single records read
at given offsets (for ``last_entries`` and the age part of ``lag``), safe to call
from any thread. Its consumer is assigned partitions directly: it never joins a group.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping
from typing import Final

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec  # type: ignore[attr-defined]

from convtrack.errors import LogError
from convtrack.log.base import LogEntry
from convtrack.log.kafka_client import REQUEST_TIMEOUT_SECS, client_settings, entry_of

_LEADER_MOVING: Final = frozenset(
    {
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.UNKNOWN_TOPIC_OR_PART,
    }
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
