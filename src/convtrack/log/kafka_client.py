"""What every Kafka client of the log shares: its settings, the request timeout, and
a consumed record read as a ``LogEntry``."""

from __future__ import annotations

from typing import Any, Final

from confluent_kafka import Message

from convtrack.log.base import LogEntry
from convtrack.log.kafka_client_log import client_log

REQUEST_TIMEOUT_SECS: Final = 5.0


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
