"""A local single-node Kafka broker: Apache Kafka's own jars in KRaft combined mode.

No containers and no Kafka download: a throwaway Maven project that depends on
``org.apache.kafka:kafka_2.13`` gives the broker's classpath
(``mvn dependency:copy-dependencies``), cached outside the repo in
``~/.cache/convtrack/kafka-<version>/lib`` (``$XDG_CACHE_HOME`` is honoured)
after the first fetch. Then, as Kafka's ``kafka-storage.sh`` and
``kafka-server-start.sh`` do, the storage is formatted once
(``kafka.tools.StorageTool format --standalone``) and ``kafka.Kafka`` runs with
``process.roles=broker,controller`` and one node.

Ports (client and controller listeners, 127.0.0.1) are chosen once, written to
``service_dir/ports.json`` and reused by later starts on the same folder; the
data lives in ``service_dir/data`` and the broker's log in
``service_dir/kafka.log``. Ready means: the client port accepts connections
*and* the broker logged ``Kafka Server started``. A start takes about 4 s.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Final

from convtrack.devservices.process import (
    DevServiceError,
    ServiceProcess,
    _free_port,
    _port_is_free,
)

KAFKA_VERSION: Final = "4.4.0"
# The broker's jars bring slf4j 1.7 without a binding; these make it log through log4j2.
_SLF4J_VERSION: Final = "2.0.17"
_LOG4J_VERSION: Final = "2.25.5"
JAVA_MIN_MAJOR: Final = 17
LIB_ENV_VAR: Final = "CONVTRACK_KAFKA_LIB"
_PORT_NAMES: Final = ("broker", "controller")
_STARTED_LINE: Final = b"Kafka Server started"
HEAP: Final = "512m"


class KafkaUnavailableError(DevServiceError):
    """Java, Maven or the Kafka jars cannot be had on this machine."""


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "convtrack"


def find_java() -> Path:
    """The ``java`` to run the broker with (``$JAVA_HOME/bin/java``, else PATH); Java 17+."""
    java: Path | None = None
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").is_file():
        java = Path(home) / "bin" / "java"
    elif on_path := shutil.which("java"):
        java = Path(on_path)
    if java is None:
        raise KafkaUnavailableError(
            "Java was not found (no `java` on PATH, no JAVA_HOME): the local Kafka broker "
            f"needs Java {JAVA_MIN_MAJOR} or newer (on Debian/Ubuntu: "
            "`apt-get install openjdk-17-jre-headless`)"
        )
    try:
        out = subprocess.run(
            [str(java), "-version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise KafkaUnavailableError(f"{java} -version failed: {exc}") from exc
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if match:
        major = int(match.group(1))
        if major == 1 and match.group(2):  # "1.8.0_x" is Java 8
            major = int(match.group(2))
        if major < JAVA_MIN_MAJOR:
            raise KafkaUnavailableError(
                f"{java} is Java {major}; Kafka {KAFKA_VERSION} needs Java {JAVA_MIN_MAJOR} "
                "or newer: set JAVA_HOME to one (on Debian/Ubuntu: "
                "`apt-get install openjdk-17-jre-headless`)"
            )
    return java


def _pom(version: str) -> str:
    deps = [
        ("org.apache.kafka", "kafka_2.13", version),
        ("org.slf4j", "slf4j-api", _SLF4J_VERSION),
        ("org.apache.logging.log4j", "log4j-slf4j2-impl", _LOG4J_VERSION),
    ]
    body = "".join(
        f"<dependency><groupId>{g}</groupId><artifactId>{a}</artifactId>"
        f"<version>{v}</version></dependency>\n"
        for g, a, v in deps
    )
    return (
        '<project xmlns="http://maven.apache.org/POM/4.0.0">\n'
        "<modelVersion>4.0.0</modelVersion>\n"
        "<groupId>convtrack.dev</groupId><artifactId>kafka-broker</artifactId>"
        "<version>1</version><packaging>pom</packaging>\n"
        f"<dependencies>\n{body}</dependencies>\n</project>\n"
    )


def kafka_lib(version: str = KAFKA_VERSION, *, fetch: bool = True) -> Path:
    """The folder of the broker's jars, fetched with Maven on first use.

    ``$CONVTRACK_KAFKA_LIB`` points at a ready folder instead. Raises
    KafkaUnavailableError (with how to fix it) when Maven is missing or the
    fetch fails.
    """
    override = os.environ.get(LIB_ENV_VAR)
    if override:
        lib = Path(override)
        if not any(lib.glob("kafka_2.13-*.jar")):
            raise KafkaUnavailableError(
                f"{LIB_ENV_VAR}={override} holds no kafka_2.13-*.jar; unset it to fetch "
                "the jars with Maven"
            )
        return lib
    home = cache_root() / f"kafka-{version}"
    lib = home / "lib"
    if (lib / f"kafka_2.13-{version}.jar").is_file():
        return lib
    if not fetch:
        raise KafkaUnavailableError(f"the Kafka {version} jars are not in {lib} yet")
    mvn = shutil.which("mvn")
    if mvn is None:
        raise KafkaUnavailableError(
            f"Maven (`mvn`) was not found: it fetches Kafka {version}'s jars once into {lib} "
            "(on Debian/Ubuntu: `apt-get install maven`; or put the jars of a Kafka "
            f"distribution's libs/ folder there, or set {LIB_ENV_VAR} to such a folder)"
        )
    home.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="fetch-", dir=home))
    try:
        (work / "pom.xml").write_text(_pom(version))
        cmd = [
            mvn,
            "-q",
            "-B",
            "dependency:copy-dependencies",
            "-DoutputDirectory=lib",
            "-DincludeScope=runtime",
        ]
        try:
            out = subprocess.run(
                cmd, cwd=work, capture_output=True, text=True, timeout=900, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise KafkaUnavailableError(
                f"fetching the Kafka jars with Maven failed: {exc}"
            ) from exc
        if out.returncode != 0 or not (work / "lib" / f"kafka_2.13-{version}.jar").is_file():
            tail = "\n".join((out.stdout + out.stderr).strip().splitlines()[-15:])
            raise KafkaUnavailableError(
                f"Maven could not fetch org.apache.kafka:kafka_2.13:{version} and its "
                "dependencies (it needs Maven Central, or a settings.xml mirror, or a "
                f"~/.m2 that already holds them):\n{tail}"
            )
        # Two fetches at once: the first rename wins, the other's copy is dropped.
        with contextlib.suppress(OSError):
            os.rename(work / "lib", lib)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if not (lib / f"kafka_2.13-{version}.jar").is_file():
        raise KafkaUnavailableError(f"the Kafka jars did not land in {lib}")
    return lib


def _cluster_id() -> str:
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
        broker, controller = ports["broker"], ports["controller"]
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.bootstrap.servers": f"127.0.0.1:{controller}",
            "listeners": f"PLAINTEXT://127.0.0.1:{broker},CONTROLLER://127.0.0.1:{controller}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{broker}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(self.data_dir.resolve()),
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
        text = "".join(f"{k}={v}\n" for k, v in props.items())
        self._properties_path().write_text(text)
        for level in ("INFO", "WARN"):
            self._log4j_path(level).write_text(_LOG4J2.format(level=level))

    def _format(self, java: Path, lib: Path) -> None:
        id_path = self.service_dir / "cluster.id"
        if not id_path.is_file():
            id_path.write_text(_cluster_id() + "\n")
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
        if self._ports is not None:
            return self._ports
        path = self.service_dir / "ports.json"
        ports: dict[str, int] | None = None
        with contextlib.suppress(OSError, ValueError, TypeError):
            saved = json.loads(path.read_text())
            if (
                set(saved) == set(_PORT_NAMES)
                and all(isinstance(p, int) for p in saved.values())
                and all(_port_is_free(p) for p in saved.values())
            ):
                ports = {str(k): int(v) for k, v in saved.items()}
        if ports is None:
            taken: set[int] = set()
            ports = {}
            for name in _PORT_NAMES:
                ports[name] = _free_port(taken)
                taken.add(ports[name])
            self.service_dir.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(ports, indent=2) + "\n")
        self._ports = ports
        return ports

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
