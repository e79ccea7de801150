"""The log's topic in the cluster: created once with its partitions and replication,
and its partitions' leaders read from the cluster metadata."""

from __future__ import annotations

import logging
import time

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from convtrack.errors import LogError
from convtrack.log.kafka_health import PROBE_TIMEOUT_SECS

log = logging.getLogger("convtrack.log.kafka")

# Partitions of a topic are created once; growing them later would move keys (and
# so one user's events) to other partitions, so convtrack never adds partitions.


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


def open_topic(
    admin: AdminClient, topic: str, partitions: int, replication: int, timeout_secs: float
) -> int:
    """Find or create ``topic``; returns its partition count. LogError while the
    cluster cannot be reached."""
    # A quick look first: an unreachable cluster should not hold the start up.
    partition_leaders(admin, topic, min(timeout_secs, PROBE_TIMEOUT_SECS))
    return ensure_topic(admin, topic, partitions, replication, timeout_secs)


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


def require_leaders(admin: AdminClient, topic: str, timeout_secs: float) -> None:
    """Raise LogError unless the metadata lists ``topic`` with a leader for every partition."""
    leaders = partition_leaders(admin, topic, timeout_secs)
    if not leaders:
        raise LogError(f"the topic {topic} is missing from the cluster metadata")
    leaderless = sorted(p for p, leader in leaders.items() if leader < 0)
    if leaderless:
        raise LogError(f"partitions {leaderless} of {topic} have no leader")
