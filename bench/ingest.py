"""Ingest throughput: convtrack against a bare ASGI stub, same server, same run.

    .venv/bin/python bench/ingest.py                     # ~1 minute with the defaults
    .venv/bin/python bench/ingest.py --commit HEAD       # the committed src/, not the tree
    .venv/bin/python bench/ingest.py --duration 5 --warmup 1
    .venv/bin/python bench/ingest.py --profile /tmp/prof # + py-spy on the server (slows it)
    .venv/bin/python bench/ingest.py --split-roles       # collector alone; processing apart
    .venv/bin/python bench/ingest.py --backend kafka     # the same split on Kafka + Redis

Phases, each a wrk warm-up then a measured wrk run of ``--duration`` seconds:

1. ``bench/stub_app.py`` (uvicorn + httptools + uvloop, like ``convtrack serve``):
   single-event POSTs, then 100-event batch POSTs, same bodies as below.
2. a real ``python -m convtrack serve`` on a temporary data dir:
   ``POST /v1/track`` (one Purchase event per request, unique event_id) and
   ``POST /v1/batch`` (``--batch-size`` events per request).

With ``--split-roles`` the measured server is ``serve --roles collect``, and a
second ``serve --roles process,store,deliver`` on the same data dir (pinned to
wrk's CPU) processes what it logs: the collector no longer shares its
interpreter with the processor.

With ``--backend kafka`` the convtrack phases run in distributed mode:
``convtrack dev services up`` in a temporary folder (a single-node Kafka broker,
Redis, SeaweedFS S3; always stopped again, also on Ctrl-C, SIGTERM or an
error), ``serve --roles collect`` measured as above and ``serve --roles
process,store,deliver`` beside it, both with the services' environment. The log
check counts the records in the Kafka topic instead of SQLite rows. Kafka,
Redis and S3 are not pinned: they share both CPUs with everything else.
The durability settings in force are printed before the figures.

Bodies come from ``bench/events.lua``. With two or more CPUs the server runs
pinned to the first CPU and wrk to the second (``taskset``); ``--no-pin`` turns
that off. Besides requests per wall-clock second, every run reports events per
CPU-second the server process actually got, the steal time on its CPU and the CPU
other processes took there: on a shared VM those explain most run-to-run spread.

After each convtrack phase the entries added to ``DATA_DIR/log/events.db`` (the
``count`` of its ``frames`` rows, one per group commit) are compared with the
events wrk saw answered accepted, and again over the whole run after a
graceful stop. Entries may exceed answers by the requests in
flight when wrk stopped (at most connections x events per request).

Needs ``wrk`` on PATH (Debian: ``apt-get install wrk``). Load stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchkit import free_port, terminate
from distributed import BACKENDS, dev_services, durability, kafka_records, raise_on_sigterm

BENCH_DIR = Path(__file__).resolve().parent
LUA = BENCH_DIR / "events.lua"
WRITE_KEY = "bench_write_key_0123456789"
SERVER_KEY = "bench_server_key_0123456789"
ADMIN_KEY = "bench_admin_key_0123456789"
# Issue 16's targets, on the development machine (2 vCPUs): twice rudder-server there.
TARGET_TRACK_EVENTS = 7_000
TARGET_BATCH_EVENTS = 36_000
TARGET_RSS_MB = 200
TARGET_LAG_SECS = 1.0
DISTURBED_PCT = 10  # steal + other processes on the server CPU, % of the run
CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- processes ---------------------------------------------------------------------------


@dataclass
class Pinning:
    server: list[str]
    load: list[str]
    note: str
    server_cpu: int | None = None


def cpu_ticks(cpu: int | None) -> tuple[int, int, int]:
    """(busy, steal, all) ticks from /proc/stat for one CPU, or all CPUs when None.

    Steal is time the hypervisor gave our virtual CPU to someone else. Busy minus
    what the server itself used is other processes on the server's CPU. Either one
    explains runs where a pinned, saturated server got less than a core.
    """
    name = "cpu" if cpu is None else f"cpu{cpu}"
    for line in Path("/proc/stat").read_text().splitlines():
        fields = line.split()
        if fields and fields[0] == name:
            t = [int(x) for x in fields[1:9]] + [0] * (8 - len(fields[1:9]))
            user, nice, system, _idle, _iowait, irq, softirq, steal = t
            return user + nice + system + irq + softirq, steal, sum(t)
    return 0, 0, 0


def pinning(enabled: bool) -> Pinning:
    cpus = sorted(os.sched_getaffinity(0))
    taskset = shutil.which("taskset")
    if not enabled:
        return Pinning([], [], "not pinned (--no-pin)")
    if len(cpus) < 2 or taskset is None:
        return Pinning([], [], "not pinned (needs 2 CPUs and taskset)")
    server_cpu, load_cpu = cpus[0], cpus[1]
    return Pinning(
        [taskset, "-c", str(server_cpu)],
        [taskset, "-c", str(load_cpu)],
        f"server pinned to CPU {server_cpu}, wrk to CPU {load_cpu} (taskset)",
        server_cpu,
    )


class Server:
    """A child server process: started, probed, measured (CPU) and stopped by its pid."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        self._log = log_path.open("ab")
        self.proc = subprocess.Popen(argv, env=env, stdout=self._log, stderr=self._log)

    def wait_ready(self, probe: Any, timeout_secs: float = 20.0) -> None:
        deadline = time.monotonic() + timeout_secs
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited early:\n{self.log_path.read_text()}")
            try:
                if probe():
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(
            f"{self.name} not ready in {timeout_secs}s:\n{self.log_path.read_text()}"
        )

    def cpu_secs(self) -> tuple[float, float]:
        """(main thread, other threads and child processes) CPU seconds so far, user +
        system. A child that exited during the run is not counted."""
        main = other = 0.0
        for pid in process_tree(self.proc.pid):
            try:
                tasks = list(Path(f"/proc/{pid}/task").iterdir())
            except OSError:
                continue
            for task in tasks:
                try:
                    stat = (task / "stat").read_text()
                except OSError:
                    continue
                fields = stat.rsplit(")", 1)[1].split()
                secs = (int(fields[11]) + int(fields[12])) / CLK_TCK
                if task.name == str(self.proc.pid):
                    main += secs
                else:
                    other += secs
        return main, other

    def stop(self, timeout_secs: float = 30.0) -> int:
        code = terminate(self.proc, timeout_secs)
        self._log.close()
        return code


def post_ok(port: int, path: str, body: bytes, headers: dict[str, str]) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        conn.request("POST", path, body, {"Content-Type": "application/json", **headers})
        return conn.getresponse().status in (200, 202)
    finally:
        conn.close()


def get_ok(port: int, path: str) -> bool:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as answer:
        return bool(answer.status == 200)


def git(*argv: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(BENCH_DIR.parent), *argv], capture_output=True, check=True
    )
    return done.stdout.decode().strip()


def code_under_test(commit: str | None, work: Path) -> tuple[dict[str, str], str]:
    """(extra environment for the server, description of the code it runs).

    Without ``--commit`` the server imports the installed (editable) package, i.e.
    the working tree, which may hold uncommitted edits. With ``--commit REV`` the
    ``src/`` of that commit is exported to the work dir and put first on PYTHONPATH,
    so the figures belong to a named commit.
    """
    if commit is None:
        try:
            head = git("rev-parse", "--short=12", "HEAD")
            dirty = bool(git("status", "--porcelain", "--", "src"))
        except (OSError, subprocess.CalledProcessError):
            return {}, "installed convtrack package (no git)"
        state = "with uncommitted changes in src/" if dirty else "clean src/"
        return {}, f"working tree at {head}, {state}"
    sha = git("rev-parse", "--verify", f"{commit}^{{commit}}")
    dest = work / f"src-{sha[:12]}"
    dest.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "-C", str(BENCH_DIR.parent), "archive", "--format=tar", sha, "src"],
        capture_output=True,
        check=True,
    )
    tar_path = work / "src.tar"
    tar_path.write_bytes(archive.stdout)
    with tarfile.open(tar_path) as tar:
        tar.extractall(dest, filter="data")
    src = dest / "src"
    pythonpath = os.pathsep.join(x for x in (str(src), os.environ.get("PYTHONPATH")) if x)
    return {"PYTHONPATH": pythonpath}, f"commit {sha[:12]} ({commit}), exported to {src}"


def imported_from(env: dict[str, str]) -> str:
    """Where the server's ``import convtrack`` resolves with this environment."""
    done = subprocess.run(
        [sys.executable, "-c", "import convtrack; print(convtrack.__file__)"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


# -- wrk -------------------------------------------------------------------------------


@dataclass
class LoadResult:
    label: str
    mode: str
    connections: int
    duration_s: float
    requests: int
    req_per_s: float
    events_accepted: int
    events_per_s: float
    lat_p50_ms: float
    lat_p99_ms: float
    lat_max_ms: float
    non_2xx: int
    socket_errors: int
    server_cpu_main_s: float = 0.0
    server_cpu_other_s: float = 0.0
    wrk_cpu_s: float = 0.0
    steal_pct: float = 0.0
    foreign_pct: float = 0.0
    log_rows_added: int | None = None
    other_sample: str = ""
    # The processor's lag (events, seconds) as wrk stopped, and LAG_SETTLE_SECS later;
    # the server's resident memory then (peak so far, and now), in MB.
    lag_at_end: tuple[float, float] | None = None
    lag_after: tuple[float, float] | None = None
    rss_mb: tuple[float, float] | None = None
    lag_sampled: tuple[float, float] | None = None  # p99 and max of the per-second samples
    raw: dict[str, Any] = field(default_factory=dict)


def run_wrk(
    *,
    label: str,
    mode: str,
    port: int,
    prefix: str,
    duration: float,
    connections: int,
    batch_size: int,
    users: int,
    pin: Pinning,
    server: Server,
) -> LoadResult:
    argv = [
        *pin.load, "wrk", "-t1", f"-c{connections}", f"-d{max(1, round(duration))}s",
        "--timeout", "10s", "-s", str(LUA), f"http://127.0.0.1:{port}",
        "--", mode, prefix, WRITE_KEY, str(batch_size), str(users),
    ]  # fmt: skip
    cpu_before = server.cpu_secs()
    ticks_before = cpu_ticks(pin.server_cpu)
    import resource

    usage_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    usage_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_after = server.cpu_secs()
    ticks_after = cpu_ticks(pin.server_cpu)
    busy, stolen, elapsed = (a - b for a, b in zip(ticks_after, ticks_before, strict=True))
    server_ticks = CLK_TCK * sum(cpu_after) - CLK_TCK * sum(cpu_before)
    line = next((x for x in done.stdout.splitlines() if x.startswith("BENCH_JSON ")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    raw = json.loads(line.removeprefix("BENCH_JSON "))
    raw["batch_size"] = batch_size if mode == "batch" else 1
    secs = raw["duration_us"] / 1e6
    # convtrack answers a batch 200 with "accepted": N; the stub answers 202 to any body.
    events = raw["n202"] if mode == "track" else raw["accepted"] + raw["n202"] * batch_size
    errors = sum(raw[f"errors_{k}"] for k in ("connect", "read", "write", "timeout"))
    wrk_cpu = (usage_after.ru_utime - usage_before.ru_utime) + (
        usage_after.ru_stime - usage_before.ru_stime
    )
    return LoadResult(
        label=label,
        mode=mode,
        connections=connections,
        duration_s=secs,
        requests=raw["requests"],
        req_per_s=raw["requests"] / secs,
        events_accepted=events,
        events_per_s=events / secs,
        lat_p50_ms=raw["lat_p50_us"] / 1000,
        lat_p99_ms=raw["lat_p99_us"] / 1000,
        lat_max_ms=raw["lat_max_us"] / 1000,
        non_2xx=raw["nother"],
        socket_errors=errors,
        server_cpu_main_s=cpu_after[0] - cpu_before[0],
        server_cpu_other_s=cpu_after[1] - cpu_before[1],
        wrk_cpu_s=wrk_cpu,
        steal_pct=100 * stolen / elapsed if elapsed else 0.0,
        foreign_pct=100 * max(0.0, busy - server_ticks) / elapsed
        if pin.server_cpu is not None and elapsed
        else 0.0,
        other_sample=raw.get("other_sample", ""),
        raw=raw,
    )


# -- the event log ---------------------------------------------------------------------


def count_rows(db: Path) -> int:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        # Entries: one row per group commit (``frames``), after any rows of the older
        # one-row-per-entry layout (``log``, all there is before frames: --commit REV).
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        framed = "SELECT SUM(count) FROM frames" if "frames" in tables else "SELECT 0"
        return int(
            conn.execute(f"SELECT COALESCE(({framed}), 0) + (SELECT COUNT(*) FROM log)").fetchone()[
                0
            ]
        )
    finally:
        conn.close()


def settled_rows(rows: Callable[[], int], timeout_secs: float = 10.0) -> int:
    """The row count once it stopped moving (requests in flight at wrk's stop land)."""
    last = rows()
    deadline = time.monotonic() + timeout_secs
    while time.monotonic() < deadline:
        time.sleep(0.3)
        now = rows()
        if now == last:
            return now
        last = now
    return last


LAG_SETTLE_SECS = 5.0


def processor_lag(port: int) -> tuple[float, float] | None:
    """``convtrack_processor_lag_events`` and ``_seconds`` from /metrics (None: absent)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    found = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in ("convtrack_processor_lag_events", "convtrack_processor_lag_seconds"):
            found[name] = float(value)
    if len(found) < 2:
        return None
    return found["convtrack_processor_lag_events"], found["convtrack_processor_lag_seconds"]


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (serve's child processes)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        try:
            for task in Path(f"/proc/{current}/task").iterdir():
                todo.extend(int(c) for c in (task / "children").read_text().split())
        except OSError:
            continue
    return found


def resident_mb(pid: int) -> tuple[float, float] | None:
    """(peak, current) resident memory of a process and its children, MB: the sum of each
    one's VmHWM (an upper bound: their peaks need not coincide) and of their VmRSS."""
    peak = now = 0.0
    for member in process_tree(pid):
        try:
            status = Path(f"/proc/{member}/status").read_text()
        except OSError:
            continue
        kb = {k: float(v.split()[0]) for k, _, v in (x.partition(":") for x in status.splitlines())
              if k in ("VmHWM", "VmRSS")}  # fmt: skip
        peak, now = peak + kb["VmHWM"] / 1024, now + kb["VmRSS"] / 1024
    return (peak, now) if peak else None


class LagSampler(threading.Thread):
    """The processor's lag in seconds, read from /metrics once a second during a run."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.samples: list[float] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(1.0):
            lag = processor_lag(self.port)
            if lag is not None:
                self.samples.append(lag[1])

    def finish(self) -> tuple[float, float] | None:
        """(p99, max) of the samples."""
        self.done.set()
        self.join(5)
        if not self.samples:
            return None
        ordered = sorted(self.samples)
        return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], ordered[-1]


def commit_stats(port: int) -> dict[str, float]:
    """Group-commit figures from /metrics: commits, events per commit, seconds per commit."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(("convtrack_log_commit_events_", "convtrack_log_commit_seconds_")):
            name, _, value = line.rpartition(" ")
            if name.endswith(("_sum", "_count")):
                values[name] = float(value)
    commits = values.get("convtrack_log_commit_events_count", 0.0)
    return {
        "commits": commits,
        "events": values.get("convtrack_log_commit_events_sum", 0.0),
        "commit_secs": values.get("convtrack_log_commit_seconds_sum", 0.0),
    }


def worker_lag(port: int) -> str:
    """The split-off processor's lag, from its /readyz (how far it trails the collector)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as answer:
            body = json.loads(answer.read())
    except urllib.error.HTTPError as unready:  # 503 still carries the report
        body = json.loads(unready.read())
    except OSError as exc:
        return f"unknown ({exc})"
    lag = body.get("processor", {})
    return f"{lag.get('lag_events')} events, {lag.get('lag_seconds')} s"


# -- profiling ---------------------------------------------------------------------------


def start_profiler(pid: int, out: Path, duration: float, pin: Pinning) -> subprocess.Popen[bytes]:
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    argv = [
        *pin.load, py_spy, "record", "--pid", str(pid), "--duration", str(max(1, round(duration))),
        "--rate", "200", "--format", "raw", "--threads", "--output", str(out),
    ]  # fmt: skip
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


# -- phases ----------------------------------------------------------------------------


def bench_target(
    name: str,
    server: Server,
    port: int,
    args: argparse.Namespace,
    pin: Pinning,
    rows: Callable[[], int] | None,
    run_id: str,
) -> tuple[list[LoadResult], int]:
    """The measured runs, and every event wrk saw accepted (warm-ups included)."""
    results = []
    seen_accepted = 0
    for mode, connections in (("track", args.connections), ("batch", args.batch_connections)):
        common = dict(
            mode=mode, port=port, connections=connections, batch_size=args.batch_size,
            users=args.users, pin=pin, server=server,
        )  # fmt: skip
        if args.warmup > 0:
            warm = run_wrk(label=f"{name} {mode} warm-up", prefix=f"{run_id}-{name}-{mode}-w",
                           duration=args.warmup, **common)  # fmt: skip
            seen_accepted += warm.events_accepted
        before = settled_rows(rows) if rows is not None else 0
        profiler = None
        if args.profile is not None and rows is not None:
            args.profile.mkdir(parents=True, exist_ok=True)
            out = args.profile / f"{mode}.txt"
            profiler = start_profiler(server.proc.pid, out, args.duration, pin)
            time.sleep(0.5)  # let py-spy attach before the load starts
        sampler = LagSampler(port) if rows is not None else None
        if sampler is not None:
            sampler.start()
        result = run_wrk(label=f"{name} {mode}", prefix=f"{run_id}-{name}-{mode}",
                         duration=args.duration, **common)  # fmt: skip
        seen_accepted += result.events_accepted
        if sampler is not None:  # convtrack: did the processor keep up, and in what memory
            result.lag_sampled = sampler.finish()
            result.rss_mb = resident_mb(server.proc.pid)
            result.lag_at_end = processor_lag(port)
            time.sleep(LAG_SETTLE_SECS)
            result.lag_after = processor_lag(port)
        if profiler is not None:
            profiler.wait(60)
        if rows is not None:
            result.log_rows_added = settled_rows(rows) - before
        results.append(result)
        print(f"  {result.label:<20} {result.req_per_s:>9,.0f} req/s {result.events_per_s:>10,.0f}"
              f" events/s  p50 {result.lat_p50_ms:6.2f} ms  p99 {result.lat_p99_ms:7.2f} ms"
              f"  non-2xx {result.non_2xx}  server CPU {result.server_cpu_main_s:.1f}s main +"
              f" {result.server_cpu_other_s:.1f}s other threads, steal {result.steal_pct:.0f}%,"
              f" other processes on its CPU {result.foreign_pct:.0f}%,"
              f" wrk CPU {result.wrk_cpu_s:.1f}s",
              flush=True)  # fmt: skip
        if result.other_sample:
            print(f"    first non-2xx answer: {result.other_sample}", flush=True)
        if result.lag_at_end is not None and result.lag_after is not None:
            (end_n, end_s), (after_n, after_s) = result.lag_at_end, result.lag_after
            print(f"    processor lag as wrk stopped: {end_n:,.0f} events, {end_s:.2f} s;"
                  f" {LAG_SETTLE_SECS:.0f} s later: {after_n:,.0f} events, {after_s:.2f} s",
                  flush=True)  # fmt: skip
        if result.lag_sampled is not None:
            print(f"    processor lag sampled each second under load: p99"
                  f" {result.lag_sampled[0]:.2f} s, max {result.lag_sampled[1]:.2f} s",
                  flush=True)  # fmt: skip
        if result.rss_mb is not None:
            print(f"    server resident memory (with its child processes): peak"
                  f" {result.rss_mb[0]:.0f} MB, at the end {result.rss_mb[1]:.0f} MB",
                  flush=True)  # fmt: skip
    return results, seen_accepted


def run_stub(args: argparse.Namespace, pin: Pinning, work: Path, run_id: str) -> list[LoadResult]:
    port = free_port()
    argv = [*pin.server, sys.executable, str(BENCH_DIR / "stub_app.py"), "--port", str(port)]
    server = Server("stub", argv, dict(os.environ), work / "stub.log")
    try:
        server.wait_ready(lambda: post_ok(port, "/", b'{"event_id":"probe"}', {}))
        print(f"stub on 127.0.0.1:{port} (pid {server.proc.pid})", flush=True)
        return bench_target("stub", server, port, args, pin, None, run_id)[0]
    finally:
        server.stop()


def run_convtrack(
    args: argparse.Namespace,
    pin: Pinning,
    work: Path,
    run_id: str,
    code_env: dict[str, str],
    services_env: dict[str, str] | None = None,
) -> tuple[list[LoadResult], dict[str, Any]]:
    """The convtrack phases. With ``services_env`` (``--backend kafka``) the server and
    its worker run on the dev services (Kafka log, Redis hot store, S3 lake), the
    roles split as with ``--split-roles``, and the log check counts Kafka records."""
    port = free_port()
    data_dir = work / "data"
    split = args.split_roles or services_env is not None
    env = {
        **os.environ,
        **code_env,
        **(services_env or {}),
        "CONVTRACK_WRITE_KEY": WRITE_KEY,
        "CONVTRACK_SERVER_KEY": SERVER_KEY,
        "CONVTRACK_ADMIN_KEY": ADMIN_KEY,
        "CONVTRACK_LIMITS_USER_EVENTS_PER_SEC": "1000000",
    }
    argv = [
        *pin.server, sys.executable, "-m", "convtrack", "serve",
        "--host", "127.0.0.1", "--port", str(port), "--data-dir", str(data_dir),
    ]  # fmt: skip
    worker: Server | None = None
    if split:
        argv += ["--roles", "collect"]
        worker_port = free_port()
        worker_argv = [
            *pin.load, sys.executable, "-m", "convtrack", "serve", "--roles",
            "process,store,deliver", "--host", "127.0.0.1", "--port", str(worker_port),
            "--data-dir", str(data_dir),
        ]  # fmt: skip
    server = Server("convtrack", argv, env, work / "convtrack.log")
    db = data_dir / "log" / "events.db"

    def rows() -> int:
        return kafka_records(env) if services_env is not None else count_rows(db)

    for line in durability(env):
        print(f"durability: {line}", flush=True)
    try:
        server.wait_ready(lambda: get_ok(port, "/healthz"), 60)
        if split:
            worker = Server("worker", worker_argv, env, work / "worker.log")
            worker.wait_ready(lambda: get_ok(worker_port, "/healthz"), 60)
            print(f"worker (process,store,deliver) on 127.0.0.1:{worker_port}"
                  f" (pid {worker.proc.pid})", flush=True)  # fmt: skip
        print(f"convtrack serve on 127.0.0.1:{port} (pid {server.proc.pid}, data {data_dir})",
              flush=True)  # fmt: skip
        results, seen_accepted = bench_target("convtrack", server, port, args, pin, rows, run_id)
        stats = commit_stats(port)
        if worker is not None:
            print(f"worker processor lag when the load stopped: {worker_lag(worker_port)}",
                  flush=True)  # fmt: skip
    finally:
        code = server.stop()
        if worker is not None:
            worker_cpu = sum(worker.cpu_secs())
            worker_code = worker.stop()
            print(f"worker: {worker_cpu:.1f} CPU-seconds over the whole run, exit {worker_code}",
                  flush=True)  # fmt: skip
    # Every answer wrk counted, warm-ups included, against the log after a clean stop.
    check = {
        "exit_code": code,
        "log_rows": rows(),
        "wrk_accepted_total": seen_accepted,
        "events_committed_per_metrics": int(stats["events"]),
        "commits": stats["commits"],
        "mean_events_per_commit": stats["events"] / stats["commits"] if stats["commits"] else 0,
        "mean_commit_ms": 1000 * stats["commit_secs"] / stats["commits"] if stats["commits"] else 0,
    }
    return results, check


# -- report ----------------------------------------------------------------------------


def report(stub: list[LoadResult], conv: list[LoadResult], check: dict[str, Any]) -> None:
    by = {(r.label.split()[0], r.mode): r for r in [*stub, *conv]}
    print()
    print(f"{'':<34}{'stub':>12}{'convtrack':>12}{'ratio':>8}")

    def row(title: str, values: tuple[float | None, float | None], fmt: str, ratio: bool) -> None:
        stub_value, conv_value = values
        s = format(stub_value, fmt) if stub_value is not None else "-"
        c = format(conv_value, fmt) if conv_value is not None else "-"
        shown = ""
        if ratio and stub_value and conv_value is not None:
            shown = f"{conv_value / stub_value:.2f}"
        print(f"{title:<34}{s:>12}{c:>12}{shown:>8}")

    def pick(mode: str, get: Any) -> tuple[float | None, float | None]:
        s, c = by.get(("stub", mode)), by.get(("convtrack", mode))
        return (get(s) if s else None), (get(c) if c else None)

    for mode in ("track", "batch"):
        if mode == "track":
            row("track req/s", pick(mode, lambda r: r.req_per_s), ",.0f", True)
            row("track req per server CPU-second", pick(mode, per_cpu_s), ",.0f", True)
        else:
            row("batch events/s", pick(mode, lambda r: r.events_per_s), ",.0f", True)
            row("batch events per server CPU-second", pick(mode, per_cpu_s), ",.0f", True)
            row("batch req/s", pick(mode, lambda r: r.req_per_s), ",.0f", True)
        row(f"{mode} latency p50 ms", pick(mode, lambda r: r.lat_p50_ms), ".2f", False)
        row(f"{mode} latency p99 ms", pick(mode, lambda r: r.lat_p99_ms), ".2f", False)
        row(f"{mode} server CPU % of one core", pick(mode, cpu_pct), ".0f", False)
        row(f"{mode} steal % on the server CPU", pick(mode, lambda r: r.steal_pct), ".1f", False)
        row(f"{mode} other processes % there", pick(mode, lambda r: r.foreign_pct), ".1f", False)
    print()
    ct, cb = by.get(("convtrack", "track")), by.get(("convtrack", "batch"))
    st = by.get(("stub", "track"))
    if ct is not None and st is not None:
        print(f"track against the stub: {ct.req_per_s / st.req_per_s:.2f} x"
              f" (per server CPU-second: {per_cpu_s(ct) / per_cpu_s(st):.2f} x)")  # fmt: skip
    for r, target in ((ct, TARGET_TRACK_EVENTS), (cb, TARGET_BATCH_EVENTS)):
        if r is not None:
            verdict = judge(r.events_per_s >= target, r)
            print(f"target {r.mode} >= {target:,} events/s: {r.events_per_s:,.0f} -> {verdict}")
            if r.lag_sampled is not None:
                p99 = r.lag_sampled[0]
                verdict = judge(p99 < TARGET_LAG_SECS, r)
                print(f"target {r.mode}: processor lag p99 (sampled each second) <"
                      f" {TARGET_LAG_SECS:.0f} s: {p99:.2f} s -> {verdict}")  # fmt: skip
            if r.lag_at_end is not None:
                lag = r.lag_at_end[1]
                verdict = judge(lag < TARGET_LAG_SECS, r)
                print(f"target {r.mode}: processor lag as the load stops < {TARGET_LAG_SECS:.0f} s:"
                      f" {lag:.2f} s -> {verdict}")  # fmt: skip
    peaks = [r.rss_mb[0] for r in conv if r.rss_mb is not None]
    if peaks:
        verdict = "MET" if max(peaks) < TARGET_RSS_MB else "NOT MET"
        print(f"target resident memory < {TARGET_RSS_MB} MB: peak {max(peaks):.0f} MB -> {verdict}")
    for r in conv:
        per_request = 1 if r.mode == "track" else int(r.raw.get("batch_size", 0)) or None
        bound = f"at most {r.connections * per_request:,}" if per_request else "a few"
        print(f"{r.label}: {r.events_accepted:,} events answered accepted, "
              f"{r.log_rows_added:,} entries added to the log (difference "
              f"{(r.log_rows_added or 0) - r.events_accepted:+,}; the requests in flight when wrk"
              f" stopped, {bound} events, are committed but never counted by wrk)")  # fmt: skip
    if check:
        print(f"after graceful stop (exit {check['exit_code']}): {check['log_rows']:,} rows in the"
              f" log; {check['wrk_accepted_total']:,} events answered accepted as counted by wrk"
              f" (warm-ups included); {check['events_committed_per_metrics']:,} events committed"
              f" per /metrics; "
              f"{check['commits']:,.0f} commits, {check['mean_events_per_commit']:.1f} events and "
              f"{check['mean_commit_ms']:.2f} ms per commit")  # fmt: skip


def disturbed(r: LoadResult) -> bool:
    """Someone else had a real share of the server's CPU during the run."""
    return r.steal_pct + r.foreign_pct > DISTURBED_PCT


def judge(met: bool, *runs: LoadResult) -> str:
    verdict = "MET" if met else "NOT MET"
    noisy = [r.label for r in runs if disturbed(r)]
    if noisy:
        return (f"{verdict}, but UNRELIABLE: other load took over {DISTURBED_PCT}% of the"
                f" server CPU during {', '.join(noisy)}; rerun on an idle machine")  # fmt: skip
    return verdict


def cpu_pct(r: LoadResult) -> float:
    return 100 * (r.server_cpu_main_s + r.server_cpu_other_s) / r.duration_s


def per_cpu_s(r: LoadResult) -> float:
    """Events per CPU-second the server process used (all threads): steadier than
    events per wall second when the VM steals time from the server's CPU."""
    cpu = r.server_cpu_main_s + r.server_cpu_other_s
    return r.events_accepted / cpu if cpu else 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description="convtrack ingest throughput vs a bare stub")
    parser.add_argument("--duration", type=float, default=10, help="seconds per measured run")
    parser.add_argument("--warmup", type=float, default=3, help="seconds of warm-up per run")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections, track")
    parser.add_argument("--batch-connections", type=int, default=16,
                        help="wrk connections, batch")  # fmt: skip
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--users", type=int, default=100_000, help="distinct user_ids")
    parser.add_argument("--no-pin", action="store_true", help="do not pin server and wrk")
    parser.add_argument("--only", choices=("all", "stub", "convtrack"), default="all")
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="record py-spy (raw collapsed stacks) of convtrack into this dir",
    )
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.add_argument(
        "--commit",
        default=None,
        help="benchmark the src/ of this git commit (exported) instead of the working tree",
    )
    parser.add_argument("--keep-data", action="store_true", help="keep the temporary data dir")
    parser.add_argument(
        "--split-roles",
        action="store_true",
        help="measure `serve --roles collect`, with process,store,deliver in a second process",
    )
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default="embedded",
        help="embedded: SQLite in the data dir (default); kafka: `convtrack dev services up`"
        " in a temp dir (Kafka, Redis, S3), the roles split as with --split-roles",
    )
    args = parser.parse_args()

    if shutil.which("wrk") is None:
        print("bench/ingest.py needs wrk on PATH (Debian/Ubuntu: apt-get install -y wrk;"
              " macOS: brew install wrk).", file=sys.stderr)  # fmt: skip
        return 2
    pin = pinning(not args.no_pin)
    run_id = f"r{int(time.time())}"
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text()
                .splitlines() if line.startswith("model name")), "?")  # fmt: skip
    print(f"CPUs: {os.cpu_count()} ({cpu}); {pin.note}", flush=True)
    load1 = os.getloadavg()[0]
    print(f"load average (1 min) before the run: {load1:.2f}", flush=True)
    if load1 > 0.5:
        print(
            "WARNING: the machine is busy; other processes will share the CPUs and skew"
            " the wall-clock figures (the per-CPU-second figures suffer less)",
            flush=True,
        )
    print(f"wrk: 1 thread, {args.connections} connections (track), {args.batch_connections}"
          f" (batch, {args.batch_size} events/request); {args.warmup:g}s warm-up +"
          f" {args.duration:g}s per run", flush=True)  # fmt: skip

    work = Path(tempfile.mkdtemp(prefix="convtrack-bench-"))
    stub: list[LoadResult] = []
    conv: list[LoadResult] = []
    check: dict[str, Any] = {}
    try:
        code_env, code = code_under_test(args.commit, work)
        print(f"convtrack code: {code}; imports {imported_from(code_env)}", flush=True)
        if args.only in ("all", "stub"):
            stub = run_stub(args, pin, work, run_id)
        if args.only in ("all", "convtrack") and args.backend == "kafka":
            raise_on_sigterm()  # so the services below are stopped on SIGTERM too
            with dev_services(keep=args.keep_data) as services:
                conv, check = run_convtrack(args, pin, work, run_id, code_env, services.env)
        elif args.only in ("all", "convtrack"):
            conv, check = run_convtrack(args, pin, work, run_id, code_env)
        report(stub, conv, check)
        if args.profile is not None and conv:
            from hotspots import print_report

            for mode in ("track", "batch"):
                path = args.profile / f"{mode}.txt"
                if path.exists():
                    print(f"\n=== py-spy, convtrack {mode} (figures above are perturbed) ===")
                    print_report(path, top=15)
        if args.json is not None:
            summary = {
                "argv": sys.argv, "pinning": pin.note, "cpu": cpu, "cpus": os.cpu_count(),
                "code": code, "results": [asdict(r) for r in [*stub, *conv]], "check": check,
            }  # fmt: skip
            args.json.write_text(json.dumps(summary, indent=2))
    finally:
        if args.keep_data:
            print(f"data kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
