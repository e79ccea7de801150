"""``convtrack dev services up|down``: Kafka, Redis and S3 that outlive the CLI.

``up`` starts each service in its own session (no SIGTERM when the CLI
exits), with its data, ports and log under ``DIR/<service>``, and records
what runs in ``DIR/services.json``: per service its pid, the process's start
time (so a reused pid is never mistaken for it) and the environment a
convtrack process needs to use it. A service that already runs is not
started again. ``down`` stops each recorded process (SIGTERM, then SIGKILL)
and removes ``services.json``; the data stays for the next ``up``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Protocol

from convtrack.devservices.kafka import KafkaBroker
from convtrack.devservices.kafka_install import LIB_ENV_VAR, KafkaUnavailableError, kafka_lib
from convtrack.devservices.redis import RedisServer
from convtrack.devservices.seaweed import DevServiceError, SeaweedS3, find_weed
from convtrack.errors import MissingDependency
from convtrack.optional import missing as missing_dependency

SERVICES: Final = ("kafka", "redis", "s3")
STATE_FILE: Final = "services.json"
BUCKET: Final = "convtrack"
COLD_URI: Final = f"s3://{BUCKET}/lake"


class Progress(Protocol):
    """Where ``up`` says what it is doing (the CLI: stderr; stdout is the KEY=value lines)."""

    def __call__(self, text: str, *, end: str = "\n") -> None: ...


def _quiet(text: str, *, end: str = "\n") -> None:
    """The default Progress: say nothing."""


class _Service(Protocol):
    def start(self, timeout_secs: float = ...) -> None: ...
    def stop(self, timeout_secs: float = ...) -> None: ...


@dataclass
class UpResult:
    """What ``up`` printed and did: the KEY=value pairs, which started, which were skipped."""

    env: dict[str, str] = field(default_factory=dict)
    started: list[str] = field(default_factory=list)
    running: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)

    def lines(self) -> list[str]:
        return [f"{k}={v}" for k, v in self.env.items()]


def _start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot, None if gone or a zombie (Linux)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] in {"Z", "X"}:
        return None
    return int(fields[19])


def _alive(entry: dict[str, Any]) -> bool:
    pid, started = entry.get("pid"), entry.get("start_time")
    return isinstance(pid, int) and started is not None and _start_time(pid) == started


def _stop_pid(pid: int, started: int, timeout_secs: float) -> None:
    """SIGTERM, wait up to timeout_secs for it to be gone, then SIGKILL and wait again."""
    for sig, wait in ((signal.SIGTERM, timeout_secs), (signal.SIGKILL, 10.0)):
        if _start_time(pid) != started:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if _start_time(pid) != started:
                return
            # Our own child (started by this process): reap it so it does not linger.
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            time.sleep(0.05)
    if _start_time(pid) == started:
        raise DevServiceError(f"process {pid} did not exit after SIGKILL")


def _read_state(root: Path) -> dict[str, dict[str, Any]]:
    try:
        state = json.loads((root / STATE_FILE).read_text())
    except (OSError, ValueError):
        return {}
    services = state.get("services") if isinstance(state, dict) else None
    return {k: v for k, v in (services or {}).items() if k in SERVICES and isinstance(v, dict)}


def _write_state(root: Path, services: dict[str, dict[str, Any]]) -> None:
    path = root / STATE_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"services": services}, indent=2) + "\n")
    os.replace(tmp, path)


def _s3_env(s3: SeaweedS3) -> dict[str, str]:
    return {"CONVTRACK_COLD_URI": COLD_URI, **s3.env()}


def _create_bucket(s3: SeaweedS3) -> None:
    import pyarrow.fs

    fs = pyarrow.fs.S3FileSystem(
        access_key=s3.access_key,
        secret_key=s3.secret_key,
        endpoint_override=s3.endpoint_url.removeprefix("http://"),
        scheme="http",
        region=s3.region,
        allow_bucket_creation=True,
    )
    try:
        if fs.get_file_info(BUCKET).type == pyarrow.fs.FileType.NotFound:
            fs.create_dir(BUCKET)
    except OSError as exc:
        raise DevServiceError(f"could not create the bucket {BUCKET!r}: {exc}") from exc


def _one_missing_extra(missing: dict[str, DevServiceError]) -> MissingDependency | None:
    """One error (one line) for the services that lack a package of an extra, if any do."""
    lacking = {name: exc for name, exc in missing.items() if isinstance(exc, MissingDependency)}
    if len(lacking) <= 1:
        return next(iter(lacking.values()), None)
    extras = sorted({exc.extra for exc in lacking.values()})
    return missing_dependency(
        " and ".join(exc.package for exc in lacking.values()),
        ",".join(extras),
        f"`convtrack dev services up` ({', '.join(lacking)})",
    )


def _kafka_check(kafka: KafkaBroker, progress: Progress) -> None:
    if not os.environ.get(LIB_ENV_VAR):
        try:
            kafka_lib(kafka.version, fetch=False)
        except KafkaUnavailableError:
            progress(
                f"convtrack: fetching Kafka {kafka.version}'s jars with Maven "
                "(once, into ~/.cache/convtrack; may take a minute)"
            )
    kafka.check()


def _duration(secs: float) -> str:
    return f"{secs:.1f} s" if secs >= 0.1 else f"{secs * 1000:.0f} ms"


def _address(name: str, kafka: KafkaBroker, redis: RedisServer, s3: SeaweedS3) -> str:
    if name == "kafka":
        return kafka.bootstrap
    if name == "redis":
        return f"127.0.0.1:{redis.port}"
    return s3.endpoint_url


def _start(
    name: str,
    kafka: KafkaBroker,
    redis: RedisServer,
    s3: SeaweedS3,
    started: list[tuple[str, _Service]],
) -> dict[str, Any]:
    """Start one service (noted in ``started`` as soon as it runs); its state entry."""
    if name == "kafka":
        kafka.start()
        started.append((name, kafka))
        return {
            "pid": kafka.pid,
            "env": {
                "CONVTRACK_LOG_KIND": "kafka",
                "CONVTRACK_LOG_KAFKA_BOOTSTRAP": kafka.bootstrap,
            },
        }
    if name == "redis":
        redis.start()
        started.append((name, redis))
        return {
            "pid": redis.pid,
            "env": {"CONVTRACK_HOT_KIND": "redis", "CONVTRACK_HOT_REDIS_URL": redis.url},
        }
    s3.start()
    started.append((name, s3))
    _create_bucket(s3)
    pid = s3._proc.pid if s3._proc is not None else None
    return {"pid": pid, "env": _s3_env(s3)}


def services_up(root: Path, *, skip_missing: bool = False, progress: Progress = _quiet) -> UpResult:
    """Start whichever of Kafka, Redis and S3 do not run yet under ``root``.

    Every missing prerequisite (Java, Maven or the jars for Kafka, a Redis
    binary, SeaweedFS's ``weed``) is checked before anything starts: without
    ``skip_missing`` one missing prerequisite fails the whole call and starts
    nothing; with it, that service is left out. If a start fails, the
    services this call started are stopped again. A prerequisite that is a
    package of an extra (the dev servers' wheels) fails in one line naming it.
    ``progress`` hears one line per step (and how long each start took).
    """
    root = Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    state = {name: entry for name, entry in _read_state(root).items() if _alive(entry)}
    kafka = KafkaBroker(root / "kafka", die_with_parent=False)
    redis = RedisServer(root / "redis", die_with_parent=False)
    s3 = SeaweedS3(root / "s3", die_with_parent=False)
    checks: dict[str, Callable[[], object]] = {
        "kafka": lambda: _kafka_check(kafka, progress),
        "redis": redis.check,
        "s3": find_weed,
    }
    result = UpResult(running=[n for n in SERVICES if n in state])
    failed_checks: dict[str, DevServiceError] = {}
    for name in SERVICES:
        if name in state:
            progress(f"convtrack: {name} is already running (pid {state[name]['pid']})")
            continue
        try:
            checks[name]()
        except DevServiceError as exc:
            failed_checks[name] = exc
    missing = {name: str(exc) for name, exc in failed_checks.items()}
    if missing and not skip_missing:
        one_line = _one_missing_extra(failed_checks)
        if one_line is not None:
            raise one_line
        details = "\n".join(f"  {name}: {why}" for name, why in missing.items())
        raise DevServiceError(
            f"cannot start {', '.join(missing)} (nothing was started; pass --skip-missing "
            f"to start the others):\n{details}"
        )
    result.skipped = missing

    started: list[tuple[str, _Service]] = []
    try:
        for name in SERVICES:
            if name in state or name in missing:
                continue
            entry: dict[str, Any]
            progress(f"convtrack: starting {name} on {_address(name, kafka, redis, s3)}… ", end="")
            step_started = time.monotonic()
            try:
                entry = _start(name, kafka, redis, s3, started)
            except BaseException:
                progress("failed")
                raise
            progress(f"ready ({_duration(time.monotonic() - step_started)})")
            entry["start_time"] = _start_time(entry["pid"])
            entry["dir"] = str(root / name)
            state[name] = entry
            result.started.append(name)
            _write_state(root, state)
    except BaseException:
        for name, service in reversed(started):
            with contextlib.suppress(Exception):
                service.stop()
            state.pop(name, None)
        _write_state(root, state)
        raise
    _write_state(root, state)
    for name in SERVICES:
        if name in state:
            result.env.update(state[name]["env"])
    return result


def services_down(root: Path, timeout_secs: float = 20) -> list[str]:
    """Stop every service recorded under ``root``; returns the names of those that ran."""
    root = Path(root).resolve()
    stopped: list[str] = []
    for name, entry in _read_state(root).items():
        if _alive(entry):
            _stop_pid(int(entry["pid"]), int(entry["start_time"]), timeout_secs)
            stopped.append(name)
        if name == "s3":  # weed leaves unix sockets in /tmp behind
            with contextlib.suppress(Exception):
                s3 = SeaweedS3(root / "s3")
                s3._port_map()
                s3._remove_stale_sockets()
    with contextlib.suppress(FileNotFoundError):
        (root / STATE_FILE).unlink()
    return stopped
