"""A first start as a new user meets it: the keys it prints (and `convtrack keys show`),
an address that is taken, and a banner that says ready only when /readyz is 200."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from convtrack import __version__
from convtrack.cli.main import cli
from convtrack.config import load_settings
from convtrack.runtime.api_keys import provision_keys
from convtrack.runtime.listen import port_holder
from convtrack.testing import wait_for
from tests.conftest import ServerFactory, ServerProcess, free_port

pytestmark = pytest.mark.slow

KEY_ENV = ("CONVTRACK_WRITE_KEY", "CONVTRACK_SERVER_KEY", "CONVTRACK_ADMIN_KEY")
CONVTRACK = str(Path(sys.executable).parent / "convtrack")


def without_keys(server: ServerProcess) -> ServerProcess:
    for name in KEY_ENV:
        server.env.pop(name)
    return server


@pytest.fixture
def listening() -> Iterator[socket.socket]:
    """A port some other program holds (this test process)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    yield sock
    sock.close()


def stored(data_dir: Path) -> dict[str, str]:
    settings = load_settings(environ={}, overrides={"server": {"data_dir": str(data_dir)}})
    return provision_keys(settings, environ={}).generated  # creates and stores them


def keys_show(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CONVTRACK_")}
    return subprocess.run(
        [CONVTRACK, "keys", "show", *args], env={**clean, **(env or {})},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_keys_show_prints_an_export_line_a_shell_can_eval(tmp_path: Path) -> None:
    keys = stored(tmp_path / "data")
    shown = keys_show("--data-dir", str(tmp_path / "data"))
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout == (
        f"export WRITE_KEY={keys['write']} SERVER_KEY={keys['server']} ADMIN_KEY={keys['admin']}\n"
    )
    # The default data dir, as the README's quickstart runs it: ./convtrack-data.
    keys_here = stored(tmp_path / "convtrack-data")
    line = 'eval "$("$CONVTRACK" keys show)"; printf "%s|%s|%s" "$WRITE_KEY" "$SERVER_KEY"'
    line += ' "$ADMIN_KEY"'
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CONVTRACK_")}
    evaluated = subprocess.run(
        ["bash", "-c", line], cwd=tmp_path, env={**clean, "CONVTRACK": CONVTRACK},
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    assert evaluated.stdout.split("|") == [keys_here[r] for r in ("write", "server", "admin")]


def test_keys_show_json_and_the_environment_wins_as_in_serve(tmp_path: Path) -> None:
    keys = stored(tmp_path)
    from_env = "it's a key; with $pace & quotes\""
    shown = keys_show("--data-dir", str(tmp_path), "--format", "json",
                      env={"CONVTRACK_SERVER_KEY": from_env})  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout) == {**keys, "server": from_env}
    # The export form quotes what the shell would otherwise split or expand.
    line = keys_show("--data-dir", str(tmp_path),
                                  env={"CONVTRACK_SERVER_KEY": from_env}).stdout  # fmt: skip
    evaluated = subprocess.run(
        ["bash", "-c", f'{line}\nprintf "%s" "$SERVER_KEY"'],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    assert evaluated.stdout == from_env, line
    # The data dir from the environment, as serve reads it.
    by_env = CliRunner().invoke(
        cli, ["keys", "show"], env={"CONVTRACK_SERVER_DATA_DIR": str(tmp_path)}
    )
    assert by_env.exit_code == 0 and keys["admin"] in by_env.output


def test_keys_show_without_keys_says_how_to_get_them(tmp_path: Path) -> None:
    shown = keys_show("--data-dir", str(tmp_path / "fresh"))
    assert shown.returncode == 2 and shown.stdout == ""
    assert "convtrack serve" in shown.stderr and "CONVTRACK_WRITE_KEY" in shown.stderr
    assert len(shown.stderr.strip().splitlines()) == 1


def test_a_first_start_on_a_port_in_use_names_it_and_the_next_start_prints_the_keys(
    server_factory: ServerFactory, listening: socket.socket
) -> None:
    server = without_keys(server_factory())
    server.port = listening.getsockname()[1]
    with pytest.raises(RuntimeError, match="exited early"):
        server.start()
    assert server.proc is not None and server.proc.wait(30) == 2
    said = server.log_path.read_text()
    assert len(said.strip().splitlines()) == 1 and "Traceback" not in said, said
    assert f"127.0.0.1:{server.port}: address already in use" in said
    assert f"pid {os.getpid()}: " in said  # the holder, found through /proc
    assert "--port, CONVTRACK_SERVER_PORT or server.port" in said
    assert not (server.data_dir / "keys.json").exists()  # nothing created, nothing lost

    listening.close()
    server.start()
    wait_for("the banner", lambda: "ready on" in server.log_path.read_text())
    keys = json.loads((server.data_dir / "keys.json").read_text())
    printed = server.log_path.read_text()
    assert "Keys created now" in printed
    assert all(f"{role:<6} {secret}" in printed for role, secret in keys.items())
    assert server.terminate() == 0

    server.start()  # later starts say where the keys are, and print none
    wait_for("the banner", lambda: "keys: " in server.log_path.read_text())
    assert server.log_path.read_text().count(keys["write"]) == 1
    assert f"keys: {server.data_dir / 'keys.json'} — convtrack keys show --data-dir" in (
        server.log_path.read_text()
    )


def test_the_holder_of_a_port_is_found_through_proc(listening: socket.socket) -> None:
    holder = port_holder(listening.getsockname()[1])
    assert holder is not None and holder.startswith(f"pid {os.getpid()}: ")
    assert "\n" not in holder
    assert port_holder(free_port()) is None


def test_a_collector_started_before_kafka_says_it_waits_not_ready(
    server_factory: ServerFactory,
) -> None:
    pytest.importorskip(
        "confluent_kafka", reason="the Kafka client: pip install 'convtrack[kafka]'"
    )
    nothing_there = f"127.0.0.1:{free_port()}"
    collector = server_factory(
        {"CONVTRACK_LOG_KIND": "kafka", "CONVTRACK_LOG_KAFKA_BOOTSTRAP": nothing_there},
        args=["--roles", "collect"],
    )
    collector.start()
    wait_for("the banner", lambda: "listening on" in collector.log_path.read_text())
    banner = next(
        line for line in collector.log_path.read_text().splitlines() if "listening on" in line
    )
    assert f"roles collect listening on {collector.url}; waiting for kafka (" in banner
    assert "ready on" not in collector.log_path.read_text()
    assert httpx.get(f"{collector.url}/readyz", timeout=10).status_code == 503
    assert collector.terminate() == 0


def test_the_embedded_default_says_ready(server_factory: ServerFactory) -> None:
    server = server_factory()
    server.start()
    wait_for("the banner", lambda: "ready on" in server.log_path.read_text())
    banner = server.log_path.read_text().splitlines()[0]
    assert banner.startswith("convtrack ") and f"ready on {server.url}" in banner
    assert "waiting" not in server.log_path.read_text()
    assert httpx.get(f"{server.url}/readyz", timeout=10).status_code == 200
    assert "keys: from the environment" in server.log_path.read_text()
    assert server.terminate() == 0


def test_a_processor_started_before_redis_says_it_waits_then_ready(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    from convtrack.devservices import RedisServer
    from tests.support.redis_fixtures import require_redis

    require_redis()
    redis = RedisServer(tmp_path / "redis")  # its port is chosen now, the server starts later
    processor = server_factory(
        {"CONVTRACK_HOT_KIND": "redis", "CONVTRACK_HOT_REDIS_URL": redis.url},
        args=["--roles", "process"],
    )
    processor.start()
    try:
        wait_for("the banner", lambda: "listening on" in processor.log_path.read_text())
        said = processor.log_path.read_text()
        assert f"roles process listening on {processor.url}; waiting for redis (" in said
        assert "ready on" not in said
        assert httpx.get(f"{processor.url}/readyz", timeout=10).status_code == 503
        redis.start()
        wait_for("the ready line", lambda: "ready on" in processor.log_path.read_text())
        assert f"convtrack {__version__} roles process ready on {processor.url}" in (
            processor.log_path.read_text()
        )
        assert httpx.get(f"{processor.url}/readyz", timeout=10).status_code == 200
        assert processor.terminate() == 0
    finally:
        redis.stop()
