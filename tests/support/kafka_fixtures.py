"""Kafka for tests: one real single-node broker per session, a fresh topic prefix per test.

Loaded as a pytest plugin from tests/conftest.py. Tests that need Kafka ask
for ``kafka_service`` (a running :class:`KafkaBroker`). They skip, saying how
to enable them, where Java 17+, Maven or the broker's jars cannot be had (the
same check and message as tests/devservices/test_devservices.py).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from convtrack.devservices.kafka import KafkaBroker
from convtrack.devservices.kafka_install import KafkaUnavailableError, find_java, kafka_lib
from tests.devservices.test_devservices import ENABLE_KAFKA


def require_kafka() -> None:
    """Skip the calling test unless the client library, Java and the broker's jars exist."""
    pytest.importorskip("confluent_kafka", reason="pip install -e '.[kafka]'")
    try:
        find_java()
        kafka_lib()
    except KafkaUnavailableError as exc:
        pytest.skip(f"no Kafka broker for this test ({ENABLE_KAFKA}): {exc}")


@pytest.fixture(scope="session")
def kafka_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    """One KRaft broker on free 127.0.0.1 ports for the whole session."""
    require_kafka()
    broker = KafkaBroker(tmp_path_factory.mktemp("kafka-session"))
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
