"""Memory per remembered event_id in the Redis hot store, next to a bare SET NX EX key.

Inserts N unique event ids through ``RedisHotStore.apply`` in processor-sized
batches and reads ``INFO memory`` ``used_memory`` before and after; then, on an
empty database, the reference: one ``SET ct:d:<source>:<event_id> 1 NX EX
86400`` per id (the plain per-key design, same key text), pipelined. Both are
printed as bytes per id. Two receive-time layouts are measured for the store:

- ``burst``: every id received within the same minute (one dedup slice; the
  figure a busy deployment sees per slice);
- ``window``: receive times spread evenly over the 24 h window (five slices;
  N ids a day).

Starts its own Redis (``convtrack.devservices.RedisServer``) in a temp dir
unless ``--url`` names one (whose database is FLUSHED: use a scratch one).

    .venv/bin/python bench/redis_memory.py            # N = 1,000,000 (6 min on 2 busy vCPUs)
    .venv/bin/python bench/redis_memory.py --n 200000
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import redis

from convtrack.devservices import RedisServer
from convtrack.store.hot.base import Effect
from convtrack.store.hot.redis import RedisHotStore

DAY_US = 86_400_000_000
GOAL_BYTES = 64


def used_memory(client: redis.Redis) -> int:
    info: dict[str, Any] = client.info("memory")
    return int(info["used_memory"])


def event_ids(n: int) -> list[str]:
    return [str(uuid.UUID(int=i * 0x9E3779B97F4A7C15 % 2**128, version=4)) for i in range(n)]


def measure_store(url: str, ids: list[str], batch: int, spread_us: int) -> tuple[float, float]:
    """(bytes per id, ids applied per second) for one receive-time layout."""
    client = redis.Redis.from_url(url)
    client.execute_command("FLUSHDB", "SYNC")
    before = used_memory(client)
    store = RedisHotStore(url, prefix="ct", dedup_window_secs=86_400, minute_retention=1440)
    now = time.time_ns() // 1000
    step = spread_us // max(1, len(ids))
    started = time.perf_counter()
    for at in range(0, len(ids), batch):
        chunk = ids[at : at + batch]
        effects = [
            Effect(
                source="default",
                event_id=event_id,
                partition=0,
                offset=at + i,
                received_at_us=now - spread_us + (at + i) * step,
                event_date="2026-11-28",
                campaign_id=f"campaign_{(at + i) % 50}",
                is_conversion=True,
                value=4999,
                currency="USD",
                dimensions={"country_code": "US", "device_type": "desktop"},
            )
            for i, event_id in enumerate(chunk)
        ]
        store.apply("processor", effects, {0: at + len(chunk)}, now)
    elapsed = time.perf_counter() - started
    assert store.remembered() == len(ids), store.remembered()
    per_id = (used_memory(client) - before) / len(ids)
    store.close()
    client.close()
    return per_id, len(ids) / elapsed


def measure_plain_keys(url: str, ids: list[str]) -> float:
    client = redis.Redis.from_url(url)
    client.execute_command("FLUSHDB", "SYNC")
    before = used_memory(client)
    for at in range(0, len(ids), 5000):
        pipe = client.pipeline(transaction=False)
        for event_id in ids[at : at + 5000]:
            pipe.set(f"ct:d:default:{event_id}", b"1", nx=True, ex=86_400)
        pipe.execute()
    per_id = (used_memory(client) - before) / len(ids)
    client.execute_command("FLUSHDB", "SYNC")
    client.close()
    return per_id


def run(url: str, n: int, batch: int) -> None:
    client = redis.Redis.from_url(url)
    server: dict[str, Any] = client.info("server")
    memory: dict[str, Any] = client.info("memory")
    client.close()
    version = server.get("valkey_version") or server["redis_version"]
    print(f"server {server.get('server_name', 'redis')} {version}, "
          f"allocator {memory['mem_allocator']}, N = {n:,} ids, batches of {batch}")  # fmt: skip
    ids = event_ids(n)
    plain = measure_plain_keys(url, ids)
    print(f"reference: SET key NX EX, key 'ct:d:default:<uuid>' ({len('ct:d:default:') + 36} B)"
          f": {plain:6.1f} B/id")  # fmt: skip
    for name, spread in (("burst", 60_000_000), ("window", DAY_US)):
        per_id, rate = measure_store(url, ids, batch, spread)
        verdict = "under" if per_id < GOAL_BYTES else "OVER"
        print(f"convtrack {name:>6}: {per_id:6.1f} B/id ({verdict} the {GOAL_BYTES} B goal; "
              f"{per_id / plain:.0%} of the reference), apply {rate:,.0f} ids/s")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=2000, help="effects per apply")
    parser.add_argument("--url", help="a scratch Redis (its database is flushed)")
    args = parser.parse_args()
    if args.url:
        run(args.url, args.n, args.batch)
        return
    with tempfile.TemporaryDirectory() as tmp, RedisServer(Path(tmp)) as server:
        run(server.url, args.n, args.batch)


if __name__ == "__main__":
    main()
