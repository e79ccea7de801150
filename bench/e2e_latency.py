"""End-to-end latency (202 → visible in GET /v1/stats/conversions) under load,
and the processor's throughput with exact dedup, each next to a reference.

    .venv/bin/python bench/e2e_latency.py --rate 2000 --seconds 20

Part 1 starts a real `convtrack serve` (embedded default), sustains --rate
events/s in 100-event batches (a few duplicates included) from this process,
and meanwhile a probe sends one event per 100 ms on its own campaign and polls
the hot read until it counts; the figures are the probe's 202 → visible times.
The reference in the same run is the probe's own 202 round trip.

Part 2 measures the processor in-process: N events (random UUID ids, 2 %
sent twice, from --processor-users users drawn at random) are put in the log
first, then the processor drains them (decode, sessions, enrichment, dedup,
counters, publish, commit). Reference: the same log read and envelope decode without
the steps.

    .venv/bin/python bench/e2e_latency.py --backend kafka --processors 2 --seconds 15

``--backend kafka`` runs both parts in distributed mode: ``convtrack dev services
up`` in a temp dir (Kafka, Redis, S3; stopped again at the end, also on Ctrl-C
or an error), then part 1 against ``serve --roles collect``, with ``--processors``
processes of ``serve --roles process`` and one of ``--roles store,deliver``;
part 2 puts the N events in a fresh topic while ``--processors`` processors wait
in their consumer group, and times until Redis counts every distinct event.
Reference: the time the same append took. The durability settings in force
(Kafka producer and broker, Redis AOF, SQLite) are printed with the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from benchkit import free_port, percentile
from distributed import (
    BACKENDS,
    RoleProcess,
    busy_pct,
    conditions,
    cpu_ticks,
    dev_services,
    durability,
    group_members,
    raise_on_sigterm,
    steal_pct,
    stop_all,
)

if TYPE_CHECKING:
    from convtrack.log.base import LogRecord

WRITE = "bench_write_key_0123456789"
SERVER = "bench_server_key_0123456789"
UA = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/131.0 Safari/537.36"


async def load(url: str, rate: int, seconds: float, stats: dict[str, int]) -> None:
    headers = {"Authorization": f"Bearer {WRITE}", "User-Agent": UA}
    batches_per_sec = max(1, rate // 100)
    recent: list[str] = []
    async with httpx.AsyncClient(headers=headers, timeout=10) as client:
        started = time.perf_counter()
        sent = 0
        while time.perf_counter() - started < seconds:
            events = []
            for _ in range(100):
                if recent and random.random() < 0.02:
                    event_id = random.choice(recent)  # a retry: a duplicate
                else:
                    event_id = uuid.uuid4().hex
                    recent = ([*recent, event_id])[-1000:]
                events.append(
                    {
                        "event_id": event_id,
                        "event_name": "Purchase",
                        "user_id": f"u{random.randrange(100_000)}",
                        "value": 1999,
                        "currency": "USD",
                        "campaign_id": "load",
                    }
                )
            response = await client.post(f"{url}/v1/batch", json={"batch": events})
            stats["accepted"] += (
                response.json().get("accepted", 0) if response.status_code == 200 else 0
            )
            sent += 1
            delay = started + sent / batches_per_sec - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)


async def probe(url: str, seconds: float, visible: list[float], acks: list[float]) -> None:
    write = {"Authorization": f"Bearer {WRITE}", "User-Agent": UA}
    read = {"Authorization": f"Bearer {SERVER}"}
    async with httpx.AsyncClient(timeout=10) as client:
        started = time.perf_counter()
        await asyncio.sleep(1.0)  # let the load settle
        while time.perf_counter() - started < seconds - 1:
            campaign = f"probe-{uuid.uuid4().hex[:10]}"
            body = {
                "event_name": "Purchase",
                "user_id": campaign,
                "campaign_id": campaign,
                "value": 1,
                "currency": "USD",
            }
            sent = time.perf_counter()
            response = await client.post(f"{url}/v1/track", json=body, headers=write)
            acked = time.perf_counter()
            assert response.status_code == 202, response.text
            acks.append(acked - sent)
            while True:
                stats = await client.get(
                    f"{url}/v1/stats/conversions", params={"campaign_id": campaign}, headers=read
                )
                if stats.json()["conversions"] == 1:
                    visible.append(time.perf_counter() - acked)
                    break
                if time.perf_counter() - acked > 10:
                    visible.append(float("inf"))
                    break
                await asyncio.sleep(0.001)
            await asyncio.sleep(max(0.0, 0.1 - (time.perf_counter() - sent)))


def measure(url: str, rate: int, seconds: float) -> None:
    """Part 1's load and probe against a running server at ``url``; prints the figures."""
    visible: list[float] = []
    acks: list[float] = []
    stats = {"accepted": 0}

    async def both() -> None:
        await asyncio.gather(load(url, rate, seconds, stats), probe(url, seconds, visible, acks))

    steal_before = cpu_ticks()
    print(f"conditions before the load: {conditions()}", flush=True)
    asyncio.run(both())
    print(
        f"load: {stats['accepted'] / seconds:,.0f} events/s accepted for {seconds:.0f} s"
        f" (target {rate:,}/s), {len(visible)} probes;"
        f" during it: CPU steal {steal_pct(steal_before, ticks := cpu_ticks()):.1f} %, both CPUs"
        f" {busy_pct(steal_before, ticks):.0f} % busy; after it {conditions()}"
    )
    ms = [v * 1000 for v in visible]
    ack_ms = [v * 1000 for v in acks]
    print(
        f"  202 → visible in /v1/stats/conversions: p50 {percentile(ms, 0.5):.1f} ms,"
        f" p99 {percentile(ms, 0.99):.1f} ms, max {max(ms):.1f} ms"
    )
    print(
        f"  reference, the probe's 202 round trip: p50 {percentile(ack_ms, 0.5):.1f} ms,"
        f" p99 {percentile(ack_ms, 0.99):.1f} ms"
    )


def server_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    return {
        **os.environ,
        **(extra or {}),
        "CONVTRACK_WRITE_KEY": WRITE,
        "CONVTRACK_SERVER_KEY": SERVER,
        "CONVTRACK_LIMITS_USER_EVENTS_PER_SEC": "0",
    }


def part_one(rate: int, seconds: float) -> None:
    port = free_port()
    with tempfile.TemporaryDirectory() as data_dir:
        env = server_env()
        for line in durability(env):
            print(f"durability: {line}")
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "convtrack",
                "serve",
                "--port",
                str(port),
                "--data-dir",
                data_dir,
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            for _ in range(200):
                try:
                    if httpx.get(f"{url}/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.05)
            measure(url, rate, seconds)
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(30)


def start_processors(
    count: int, env: dict[str, str], work: Path, roles: list[RoleProcess]
) -> list[RoleProcess]:
    """``count`` processes of ``serve --roles process``, each with its own data dir,
    ready (joined their consumer group) before this returns."""
    started = []
    for i in range(count):
        data_dir = work / f"processor-{i}"
        role = RoleProcess("process", free_port(), data_dir, env, work / f"processor-{i}.log")
        roles.append(role)
        started.append(role)
    for role in started:
        if not role.wait("/readyz", 60):
            print(f"processor pid {role.proc.pid} not ready after 60 s: {role.readyz()}")
    return started


def part_one_distributed(rate: int, seconds: float, processors: int, env: dict[str, str]) -> None:
    """Part 1 on Kafka + Redis: one collector, ``processors`` processor processes and
    one ``store,deliver`` process, all with the dev services' environment."""
    work = Path(tempfile.mkdtemp(prefix="convtrack-bench-e2e-"))
    roles: list[RoleProcess] = []
    try:
        collect_dir = work / "collector"
        collector = RoleProcess("collect", free_port(), collect_dir, env, work / "collect.log")
        roles.append(collector)
        if not collector.wait("/healthz", 60):
            raise RuntimeError(f"collector not up in 60 s: {collector.log_path.read_text()}")
        start_processors(processors, env, work, roles)
        rest = RoleProcess("store,deliver", free_port(), collect_dir, env, work / "rest.log")
        roles.append(rest)
        rest.wait("/healthz", 60)
        print(
            f"roles: collect (pid {collector.proc.pid}), {processors} x process"
            f" (pids {', '.join(str(r.proc.pid) for r in roles[1:-1])}),"
            f" store,deliver (pid {rest.proc.pid}); Kafka, Redis and S3 not pinned",
            flush=True,
        )
        print(f"processor consumer group: {group_members(env, 'processor')}", flush=True)
        measure(f"http://127.0.0.1:{collector.port}", rate, seconds)
        cpu = ", ".join(f"{r.roles} {r.cpu_secs():.1f}" for r in roles)
        print(f"  CPU-seconds per role process over the run: {cpu}")
    finally:
        stop_all(roles)
        shutil.rmtree(work, ignore_errors=True)


def backlog_records(
    events: int, campaign_of: Callable[[int], str], users: int
) -> tuple[list[LogRecord], int]:
    """``events`` Purchase envelopes as traffic has them: random (UUID) event ids, 2 %
    sent twice, each event from a user drawn at random among ``users`` (event i in
    campaign ``campaign_of(i)``); and the number of distinct ids. Seeded: every run
    gets the same events. Sequential ids and users would flatter the hot store, whose
    B-trees then take each batch's keys on a few neighbouring pages."""
    from convtrack.log.base import LogRecord
    from convtrack.model.event import Envelope, encode_envelope

    rng = random.Random(20261204)
    now = time.time_ns() // 1000
    records = []
    ids: set[str] = set()
    event_id = ""
    for i in range(events):
        if i % 50 or not event_id:  # else the previous event once more: 2 % duplicates
            event_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        ids.add(event_id)
        envelope = Envelope(
            event_id=event_id,
            source="default",
            event_name="Purchase",
            event_time_us=now,
            received_at_us=now,
            user_id=f"u{rng.randrange(users)}",
            value=1999,
            currency="USD",
            campaign_id=campaign_of(i),
            context={
                "page_url": "https://shop.example/thanks?utm_source=google&utm_medium=cpc",
                "user_agent": UA,
                "ip": "8.8.8.8",
            },
        )
        records.append(LogRecord(envelope.partition_key, encode_envelope(envelope)))
    return records, len(ids)


def part_two_distributed(events: int, processors: int, env: dict[str, str], users: int) -> None:
    """Processor throughput on Kafka + Redis: ``processors`` processes, already in
    their consumer group, drain ``events`` put in a fresh topic in one go.

    The clock starts when the first record is handed to the producer and stops when
    the Redis counters hold every distinct event, so the drain overlaps the append
    (timed and printed too: it is several times faster than processing).
    """
    from convtrack.clock import SystemClock
    from convtrack.config import load_settings
    from convtrack.runtime.backends import open_hot_store, open_log

    tag = uuid.uuid4().hex[:8]
    env = {
        **env,
        "CONVTRACK_LOG_KAFKA_TOPIC_PREFIX": f"bench-drain-{tag}",
        "CONVTRACK_HOT_REDIS_PREFIX": f"bd{tag}",
    }
    settings = load_settings(environ=env)
    campaign = f"backlog-{tag}"
    records, distinct = backlog_records(events, lambda _: campaign, users)
    work = Path(tempfile.mkdtemp(prefix="convtrack-bench-drain-"))
    roles: list[RoleProcess] = []
    log = open_log(settings, "events", SystemClock())
    hot = open_hot_store(settings)
    try:
        start_processors(processors, env, work, roles)
        print(f"processor consumer group: {group_members(env, 'processor')}", flush=True)
        date = time.strftime("%Y-%m-%d", time.gmtime())
        cpu_before = [r.cpu_secs() for r in roles]
        ticks_before = cpu_ticks()
        started = time.perf_counter()
        for start in range(0, events, 10_000):
            log.append_blocking(records[start : start + 10_000])
        appended = time.perf_counter() - started
        counted = 0
        deadline = started + 300
        while time.perf_counter() < deadline:
            counted = sum(
                c.conversions for c in hot.campaign_totals(date) if c.campaign_id == campaign
            )
            if counted >= distinct:
                break
            time.sleep(0.05)
        drained = time.perf_counter() - started
        ticks = cpu_ticks()
        cpu = [r.cpu_secs() - b for r, b in zip(roles, cpu_before, strict=True)]
        print(
            f"processors on Kafka + Redis ({processors} process{'es' if processors > 1 else ''}):"
            f" {events / drained:,.0f} events/s with exact dedup ({events:,} events in"
            f" {drained:.2f} s, {counted:,} of {distinct:,} distinct counted);"
            f" CPU-seconds per processor {', '.join(f'{c:.1f}' for c in cpu)}; both CPUs"
            f" {busy_pct(ticks_before, ticks):.0f} % busy, steal"
            f" {steal_pct(ticks_before, ticks):.1f} %"
        )
        print(
            f"  reference, appending the same {events:,} events to Kafka from this process:"
            f" {appended:.2f} s ({events / appended:,.0f} events/s)"
        )
    finally:
        stop_all(roles)
        log.close()
        hot.close()
        shutil.rmtree(work, ignore_errors=True)


def part_two(events: int, users: int) -> None:
    from convtrack.clock import SystemClock
    from convtrack.config import load_settings
    from convtrack.model.event import decode_envelope
    from convtrack.runtime.embedded import Pipeline
    from convtrack.runtime.serve import settle_heap

    with tempfile.TemporaryDirectory() as data_dir:
        env = {
            "CONVTRACK_WRITE_KEY": WRITE,
            "CONVTRACK_SERVER_KEY": SERVER,
            "CONVTRACK_ADMIN_KEY": "bench_admin_key_0123456789",
        }
        settings = load_settings(environ=env, overrides={"server": {"data_dir": data_dir}})
        pipeline = Pipeline(settings, SystemClock(), environ=env)
        now = time.time_ns() // 1000  # the events' day, for the counters read below
        records, _ = backlog_records(events, lambda i: f"c{i % 50}", users)
        for start in range(0, events, 10_000):
            pipeline.log.append_blocking(records[start : start + 10_000])

        settle_heap()  # as `convtrack serve` does once it has started
        consumer = pipeline.log.consumer("bench-reference")
        started = time.perf_counter()
        while batch := consumer.poll(2000, 0.0):
            for entry in batch:
                decode_envelope(entry.payload)
        reference = events / (time.perf_counter() - started)
        consumer.close()

        ticks_before = cpu_ticks()
        started = time.perf_counter()
        while pipeline.processor.run_once():
            pass
        rate = events / (time.perf_counter() - started)
        ticks = cpu_ticks()
        counted = pipeline.hot.campaign_totals(time.strftime("%Y-%m-%d", time.gmtime(now / 1e6)))
        total = sum(c.conversions for c in counted)
        pipeline.close()
        print(
            f"processor: {rate:,.0f} events/s with exact dedup ({events:,} events from"
            f" {users:,} users, random ids, {total:,} counted); both CPUs"
            f" {busy_pct(ticks_before, ticks):.0f} % busy,"
            f" steal {steal_pct(ticks_before, ticks):.1f} %"
        )
        print(f"  reference, reading and decoding the same log only: {reference:,.0f} events/s")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--processor-events", type=int, default=200_000)
    parser.add_argument(
        "--processor-users",
        type=int,
        default=100_000,
        help="part 2: the users the events come from, drawn at random (default 100,000)",
    )
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default="embedded",
        help="embedded: one `convtrack serve` on SQLite (default); kafka: dev services"
        " (Kafka, Redis, S3) in a temp dir and the roles in processes of their own",
    )
    parser.add_argument(
        "--processors",
        type=int,
        default=1,
        help="with --backend kafka: processes of `serve --roles process` (default 1)",
    )
    parser.add_argument("--skip-part-two", action="store_true", help="only the latency part")
    parser.add_argument(
        "--processor-only", action="store_true", help="only part 2 (the processor's throughput)"
    )
    args = parser.parse_args()
    if args.backend == "embedded":
        if args.processors != 1:
            parser.error("--processors needs --backend kafka (SQLite allows one processor)")
        if not args.processor_only:
            part_one(args.rate, args.seconds)
        if not args.skip_part_two:
            part_two(args.processor_events, args.processor_users)
        return
    raise_on_sigterm()
    with dev_services() as services:
        env = server_env(services.env)
        for line in durability(env):
            print(f"durability: {line}")
        if not args.processor_only:
            part_one_distributed(args.rate, args.seconds, args.processors, env)
        if not args.skip_part_two:
            part_two_distributed(args.processor_events, args.processors, env, args.processor_users)


if __name__ == "__main__":
    main()
