"""Distributed mode for the benchmarks: dev services, role processes, durability in force.

Used by ``bench/ingest.py --backend kafka`` and ``bench/e2e_latency.py --backend
kafka``. ``dev_services()`` starts ``convtrack dev services up`` (a single-node
Kafka broker, Redis with its AOF, SeaweedFS S3) in a temporary folder and always
stops them again (``services_down``), also on Ctrl-C, SIGTERM or an error: the
services run in sessions of their own, so nothing else would stop them.
``RoleProcess`` is one ``convtrack serve --roles ...`` child with the services'
environment.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from urllib.parse import urlparse

from benchkit import terminate

BACKENDS = ("embedded", "kafka")


def raise_on_sigterm() -> None:
    """Make SIGTERM unwind like Ctrl-C, so every ``finally`` stops what it started."""

    def stop(signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, stop)


@dataclass
class Services:
    root: Path
    env: dict[str, str]


@contextlib.contextmanager
def dev_services(keep: bool = False) -> Iterator[Services]:
    """Kafka, Redis and S3 from ``convtrack dev services up`` in a temp dir, stopped on exit."""
    from convtrack.devservices.manager import services_down, services_up

    root = Path(tempfile.mkdtemp(prefix="convtrack-bench-services-"))
    started = time.monotonic()
    try:
        up = services_up(root)
        print(f"dev services up in {root} ({time.monotonic() - started:.1f} s):"
              f" {', '.join(up.started)}", flush=True)  # fmt: skip
        yield Services(root, dict(up.env))
    finally:
        stopped = services_down(root)
        print(f"dev services down: {', '.join(stopped) or 'none ran'}", flush=True)
        if keep:
            print(f"services data kept in {root}", flush=True)
        else:
            shutil.rmtree(root, ignore_errors=True)


# -- durability ----------------------------------------------------------------------


def _redis_config(url: str, name: str) -> str:
    from convtrack.devservices.redis import resp_command

    port = urlparse(url).port or 6379
    reply = resp_command(port, "CONFIG", "GET", name).decode(errors="replace")
    # *2 $len name $len value: the value is the last non-empty line
    lines = [x for x in reply.split("\r\n") if x and not x.startswith(("*", "$"))]
    return lines[-1] if len(lines) >= 2 else f"? ({reply!r})"


def durability(env: Mapping[str, str]) -> list[str]:
    """The durability settings in force for a server started with ``env``, one per line.

    Read from the settings the server loads (same environment) and, for Redis, asked
    of the running server, so the report states what ran rather than what was meant.
    """
    from convtrack.config import load_settings
    from convtrack.log.kafka_topic import min_insync_replicas

    settings = load_settings(environ=env)
    lines = []
    if settings.log.kind == "kafka":
        log = settings.log
        lines.append(
            f"event log: Kafka {log.kafka_bootstrap}, producer acks=all,"
            f" enable.idempotence=true, linger.ms={log.kafka_linger_ms:g},"
            f" {log.kafka_partitions} partitions, replication {log.kafka_replication}"
            f" (min.insync.replicas {min_insync_replicas(log.kafka_replication)}) on a single"
            " local broker; the broker keeps Kafka's default log.flush.* (no fsync per"
            " append: an acknowledged record is in the broker's page cache, safe from a"
            " process crash, not from a power loss of this one machine)"
        )
    else:
        lines.append(
            f"event log: SQLite, synchronous={settings.log.sqlite_synchronous}"
            " (each group commit fsynced before the 202 when 'full')"
        )
    if settings.hot.kind == "redis":
        url = settings.hot.redis_url
        try:
            aof = _redis_config(url, "appendonly")
            fsync = _redis_config(url, "appendfsync")
        except OSError as exc:
            aof = fsync = f"? ({exc})"
        lines.append(
            f"hot store: Redis {url}, appendonly {aof}, appendfsync {fsync}"
            " (asked of the running server)"
        )
    else:
        lines.append("hot store: SQLite hot.db, synchronous=NORMAL (the fsynced log replays)")
    if settings.log.kind == "kafka":
        lines.append(
            "SQLite: only rejects and dead letters (not on the measured path);"
            f" log.sqlite_synchronous={settings.log.sqlite_synchronous} applies to no log here"
        )
    return lines


# -- role processes ------------------------------------------------------------------


class RoleProcess:
    """One ``convtrack serve --roles ROLES`` child, probed over HTTP, stopped by its pid."""

    def __init__(
        self,
        roles: str,
        port: int,
        data_dir: Path,
        env: Mapping[str, str],
        log_path: Path,
        prefix: list[str] | None = None,
    ) -> None:
        self.roles = roles
        self.port = port
        self.log_path = log_path
        self._log = log_path.open("ab")
        argv = [
            *(prefix or []), sys.executable, "-m", "convtrack", "serve", "--roles", roles,
            "--host", "127.0.0.1", "--port", str(port), "--data-dir", str(data_dir),
        ]  # fmt: skip
        self.proc = subprocess.Popen(argv, env=dict(env), stdout=self._log, stderr=self._log)

    def _get(self, path: str) -> tuple[int, dict[str, object]]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=2) as r:
                return int(r.status), json.loads(r.read() or b"{}")
        except urllib.error.HTTPError as answer:
            return answer.code, json.loads(answer.read() or b"{}")

    def wait(self, path: str, timeout_secs: float) -> bool:
        """Until ``path`` answers 200; False at the deadline (not fatal: reported)."""
        deadline = time.monotonic() + timeout_secs
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"serve --roles {self.roles} exited {self.proc.returncode}:\n"
                    + self.log_path.read_text()[-3000:]
                )
            with contextlib.suppress(OSError, ValueError):
                if self._get(path)[0] == 200:
                    return True
            time.sleep(0.1)
        return False

    def readyz(self) -> dict[str, object]:
        with contextlib.suppress(OSError, ValueError):
            return self._get("/readyz")[1]
        return {}

    def cpu_secs(self) -> float:
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self, timeout_secs: float = 15.0) -> int:
        code = terminate(self.proc, timeout_secs)
        self._log.close()
        return code


def stop_all(processes: list[RoleProcess]) -> None:
    """Stop in reverse start order; report exits other than 0 (a SIGTERM drain that failed)."""
    for role in reversed(processes):
        code = role.stop()
        if code != 0:
            print(f"serve --roles {role.roles} (pid {role.proc.pid}) exited {code};"
                  f" log {role.log_path}", flush=True)  # fmt: skip


def conditions() -> str:
    """Load average now, for the report."""
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min)"


def cpu_ticks() -> tuple[int, int, int]:
    """(steal, idle + iowait, all) ticks of all CPUs from /proc/stat: steal is time the
    hypervisor gave our virtual CPUs to someone else."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return fields[7], fields[3] + fields[4], sum(fields)


def steal_pct(before: tuple[int, int, int], after: tuple[int, int, int]) -> float:
    total = after[2] - before[2]
    return 100 * (after[0] - before[0]) / total if total else 0.0


def busy_pct(before: tuple[int, int, int], after: tuple[int, int, int]) -> float:
    """Share of both CPUs neither idle nor stolen: near 100 means the machine was full."""
    total = after[2] - before[2]
    idle_or_stolen = (after[0] - before[0]) + (after[1] - before[1])
    return 100 * (total - idle_or_stolen) / total if total else 0.0


def kafka_records(env: Mapping[str, str], stream: str = "events") -> int:
    """Records in the topic of ``stream``: the sum of its partitions' high watermarks
    minus low ones (no transactions, so every offset is a record)."""
    from confluent_kafka import Consumer, TopicPartition

    from convtrack.config import load_settings

    settings = load_settings(environ=env).log
    topic = f"{settings.kafka_topic_prefix}.{stream}"
    consumer = Consumer(
        {"bootstrap.servers": settings.kafka_bootstrap, "group.id": "bench-count",
         "enable.auto.commit": False}
    )  # fmt: skip
    try:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        total = 0
        for partition in meta.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), 10)
            total += high - low
        return total
    finally:
        consumer.close()


def group_members(env: Mapping[str, str], group: str) -> str:
    """The members of a consumer group and how many partitions each holds, e.g. ``6+6``."""
    from confluent_kafka.admin import AdminClient

    from convtrack.config import load_settings

    settings = load_settings(environ=env).log
    name = f"{settings.kafka_topic_prefix}.{group}"
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    try:
        described = admin.describe_consumer_groups([name])[name].result(timeout=10)
    except Exception as exc:  # a report line, never a reason to stop the bench
        return f"? ({exc})"
    counts = sorted(len(m.assignment.topic_partitions) for m in described.members)
    return f"{len(counts)} member(s), partitions {'+'.join(map(str, counts)) or '-'}"


if __name__ == "__main__":  # a smoke check: services up, durability, down
    raise_on_sigterm()
    with dev_services() as services:
        for line in durability({**os.environ, **services.env}):
            print(" ", line)
    sys.exit(0)
