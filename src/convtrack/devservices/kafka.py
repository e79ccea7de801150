"""A local single-node Kafka broker: Apache Kafka's own jars in KRaft combined mode.

The jars and Java come from kafka_install, the configuration files from
kafka_config. As Kafka's ``kafka-storage.sh`` and ``kafka-server-start.sh`` do,
the storage is formatted once (``kafka.tools.StorageTool format --standalone``)
and ``kafka.Kafka`` runs with ``process.roles=broker,controller`` and one node.

Ports (client and controller listeners, 127.0.0.1) are chosen once, written to
``service_dir/ports.json`` and reused by later starts on the same folder; the
data lives in ``service_dir/data`` and the broker's log in
``service_dir/kafka.log``. Ready means: the client port accepts connections
*and* the broker logged ``Kafka Server started``. A start takes about 4 s.
"""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path
from typing import Final

from convtrack.devservices.kafka_config import (
    kept_ports,
    log4j2_properties,
    new_cluster_id,
    server_properties,
)
from convtrack.devservices.kafka_install import KAFKA_VERSION, find_java, kafka_lib
from convtrack.devservices.process import DevServiceError, ServiceProcess

_STARTED_LINE: Final = b"Kafka Server started"
HEAP: Final = "512m"


class KafkaBroker(ServiceProcess):
    """One single-node KRaft Kafka broker on 127.0.0.1, with its data in ``service_dir``.

    With ``die_with_parent`` (Linux) the broker gets SIGTERM when the thread
    that started it dies; pass False for a broker that must outlive the
    process that started it.
    """

    def __init__(
        self,
        service_dir: Path,
        *,
        version: str = KAFKA_VERSION,
        die_with_parent: bool = True,
    ) -> None:
        super().__init__(die_with_parent=die_with_parent)
        self.service_dir = Path(service_dir)
        self.version = version
        self._ports: dict[str, int] | None = None

    # -- what clients need --------------------------------------------------

    @property
    def port(self) -> int:
        return self._port_map()["broker"]

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.service_dir / "kafka.log"

    @property
    def data_dir(self) -> Path:
        return self.service_dir / "data"

    # -- lifecycle ----------------------------------------------------------

    def check(self) -> None:
        """Raise KafkaUnavailableError unless Java and the jars (fetched now if need be) exist."""
        find_java()
        kafka_lib(self.version)

    def command(self) -> list[str]:
        lib = kafka_lib(self.version)
        return [
            str(find_java()),
            f"-Xmx{HEAP}",
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self._log4j_path('INFO')}",
            "-cp",
            str(lib / "*"),
            "kafka.Kafka",
            str(self._properties_path()),
        ]

    def start(self, timeout_secs: float = 60) -> None:
        """Format the storage if new, start the broker, wait until it is ready."""
        if self.is_running():
            return
        started = time.monotonic()
        java = find_java()
        lib = kafka_lib(self.version)
        self.service_dir.mkdir(parents=True, exist_ok=True)
        self._write_config()
        if not (self.data_dir / "meta.properties").is_file():
            self._format(java, lib)
        log_offset = self._spawn(self.command(), self.service_dir)

        def ready() -> bool:
            return self._logged_started(log_offset) and self._accepts_connections()

        if self._wait_ready(
            started, timeout_secs, name="the Kafka broker", ready=ready, interval=0.1
        ):
            return
        raise DevServiceError(
            f"the Kafka broker at {self.bootstrap} was not ready within {timeout_secs}s:\n"
            f"{self._log_tail()}"
        )

    def stop(self, timeout_secs: float = 20) -> None:
        """SIGTERM (a controlled shutdown), wait up to timeout_secs, then SIGKILL."""
        super().stop(timeout_secs)

    def restart(self, timeout_secs: float = 60) -> None:
        super().restart(timeout_secs)

    # -- internals ----------------------------------------------------------

    def _properties_path(self) -> Path:
        return self.service_dir / "server.properties"

    def _log4j_path(self, level: str) -> Path:
        return self.service_dir / f"log4j2-{level.lower()}.properties"

    def _write_config(self) -> None:
        ports = self._port_map()
        self._properties_path().write_text(
            server_properties(ports["broker"], ports["controller"], self.data_dir)
        )
        for level in ("INFO", "WARN"):
            self._log4j_path(level).write_text(log4j2_properties(level))

    def _format(self, java: Path, lib: Path) -> None:
        id_path = self.service_dir / "cluster.id"
        if not id_path.is_file():
            id_path.write_text(new_cluster_id() + "\n")
        cluster = id_path.read_text().strip()
        cmd = [
            str(java),
            f"-Dlog4j2.configurationFile={self._log4j_path('WARN')}",
            "-cp",
            str(lib / "*"),
            "kafka.tools.StorageTool",
            "format",
            "--standalone",
            "--ignore-formatted",
            "-t",
            cluster,
            "-c",
            str(self._properties_path()),
        ]
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise DevServiceError(f"formatting the Kafka storage failed: {exc}") from exc
        with self.log_path.open("a") as log:
            log.write(f"\n--- format: {' '.join(cmd)}\n{out.stdout}{out.stderr}")
        if out.returncode != 0:
            raise DevServiceError(
                f"formatting the Kafka storage in {self.data_dir} failed "
                f"(exit {out.returncode}):\n{(out.stdout + out.stderr).strip()[-2000:]}"
            )

    def _port_map(self) -> dict[str, int]:
        """Ports chosen once: kept in memory and in service_dir/ports.json for later runs."""
        if self._ports is None:
            self._ports = kept_ports(self.service_dir)
        return self._ports

    def _logged_started(self, offset: int) -> bool:
        try:
            with self.log_path.open("rb") as f:
                f.seek(offset)
                return _STARTED_LINE in f.read()
        except OSError:
            return False

    def _accepts_connections(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1.0):
                return True
        except OSError:
            return False
