"""The Kafka log against the log contract, on a real broker, plus what only it promises."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from convtrack.clock import SystemClock
from convtrack.devservices.kafka import KafkaBroker
from convtrack.log.base import EventLog
from convtrack.log.kafka import KafkaLog
from tests.contract.log_contract import LogContract

PARTITIONS = 4


def open_kafka_log(broker: KafkaBroker, prefix: str, **overrides: object) -> KafkaLog:
    settings: dict[str, object] = {
        "topic": f"{prefix}.events",
        "group_prefix": prefix,
        "partitions": PARTITIONS,
        "replication": 1,
        "linger_ms": 2.0,
        "clock": SystemClock(),
        **overrides,
    }
    return KafkaLog(broker.bootstrap, **settings)  # type: ignore[arg-type]


def prefix_of(path: Path) -> str:
    """A topic prefix of its own per test; the same one when a test reopens its log."""
    return "t" + hashlib.sha256(str(path).encode()).hexdigest()[:12]


class TestKafkaLogContract(LogContract):
    @pytest.fixture(autouse=True)
    def _broker(self, kafka_service: KafkaBroker) -> None:
        self.broker = kafka_service

    def open_log(self, path: Path) -> EventLog:
        return open_kafka_log(self.broker, prefix_of(path))
