"""The local Kafka broker's configuration files, and the ports it keeps across starts.

One node in KRaft combined mode (``process.roles=broker,controller``), every
internal topic with one replica, listening on 127.0.0.1 only; log4j2 writes the
broker's lines to its console (the service log) at the level asked.
"""

from __future__ import annotations

import base64
import contextlib
import json
import uuid
from pathlib import Path
from typing import Final

from convtrack.devservices.process import _free_port, _port_is_free

PORT_NAMES: Final = ("broker", "controller")


def new_cluster_id() -> str:
    # Like Kafka's own Uuid.randomUuid: never one starting with '-', which the storage
    # tool's argument parser would read as an option.
    while True:
        cluster = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cluster.startswith("-"):
            return cluster


_LOG4J2: Final = """\
status = warn
appender.out.type = Console
appender.out.name = OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = {level}
rootLogger.appenderRef.out.ref = OUT
logger.state.name = state.change.logger
logger.state.level = WARN
logger.config.name = org.apache.kafka.common.config.AbstractConfig
logger.config.level = WARN
"""


def server_properties(broker: int, controller: int, data_dir: Path) -> str:
    """``server.properties`` of a single-node broker with its data in ``data_dir``."""
    props = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.bootstrap.servers": f"127.0.0.1:{controller}",
        "listeners": f"PLAINTEXT://127.0.0.1:{broker},CONTROLLER://127.0.0.1:{controller}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{broker}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(data_dir.resolve()),
        "num.partitions": "1",
        "default.replication.factor": "1",
        "min.insync.replicas": "1",
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "8",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "8",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "auto.create.topics.enable": "true",
        "group.initial.rebalance.delay.ms": "0",
    }
    return "".join(f"{k}={v}\n" for k, v in props.items())


def log4j2_properties(level: str) -> str:
    """A log4j2 configuration: ``level`` for the broker, WARN for its noisiest loggers."""
    return _LOG4J2.format(level=level)


def kept_ports(service_dir: Path) -> dict[str, int]:
    """The ports saved in ``service_dir/ports.json`` if still free, else new ones (saved)."""
    path = service_dir / "ports.json"
    with contextlib.suppress(OSError, ValueError, TypeError):
        saved = json.loads(path.read_text())
        if (
            set(saved) == set(PORT_NAMES)
            and all(isinstance(p, int) for p in saved.values())
            and all(_port_is_free(p) for p in saved.values())
        ):
            return {str(k): int(v) for k, v in saved.items()}
    taken: set[int] = set()
    ports: dict[str, int] = {}
    for name in PORT_NAMES:
        ports[name] = _free_port(taken)
        taken.add(ports[name])
    service_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(ports, indent=2) + "\n")
    return ports
