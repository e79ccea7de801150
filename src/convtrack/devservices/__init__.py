"""Real services for development and tests, run as local child processes on 127.0.0.1."""

from __future__ import annotations

from convtrack.devservices.kafka import KafkaBroker
from convtrack.devservices.kafka_install import KafkaUnavailableError
from convtrack.devservices.redis import RedisNotFoundError, RedisServer
from convtrack.devservices.seaweed import (
    DevServiceError,
    SeaweedS3,
    WeedNotFoundError,
    find_weed,
)

__all__ = [
    "DevServiceError",
    "KafkaBroker",
    "KafkaUnavailableError",
    "RedisNotFoundError",
    "RedisServer",
    "SeaweedS3",
    "WeedNotFoundError",
    "find_weed",
]
