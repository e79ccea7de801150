"""Disk bytes per event on the embedded default: the log, the hot store, the lake.

    .venv/bin/python bench/disk_per_event.py --events 50000 [--payload web|minimal]

Starts a real `convtrack serve` on a fresh data dir (SQLite log and hot
store, local lake, every setting at its default), sends --events distinct
events in 100-event batches (--payload web: a web shop's mix, page views
with a full context and contact data, 10 % purchases with items; minimal:
purchases with only an id, a user, a value and a campaign), waits until the
processor has counted them all, stops the server with SIGTERM (which
flushes the lake), and prints the size of each part of the data dir per
event, next to the JSON the client sent per event.

The final flush writes one Parquet file per day and campaign, which is what
compaction makes of a closed day: the lake figure is what a past day costs
for good (an open day's many small flushes cost more until it is compacted).
SQLite files are measured as they are on disk (main file plus -wal and
-shm), free pages included: what `du` shows and what the disk must hold.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

from benchkit import free_port, terminate
from convtrack.runtime.backends import open_cold_store
from convtrack.store.cold.manifest import read_state

WRITE = "bench_write_key_0123456789"
SERVER = "bench_server_key_0123456789"
UA = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/131.0 Safari/537.36"
PARTS = {
    "log/events.db": "event log (every accepted event)",
    "log/processed.db": "processed log (every new event, enriched)",
    "hot/hot.db": "hot store (dedup, counters, sessions, touches)",
    "lake": "lake (Parquet, as flushed)",
}


def minimal_event(n: int) -> dict[str, object]:
    """The smallest useful event: a purchase with an id, a user, a value and a campaign."""
    return {
        "event_id": uuid.uuid4().hex,
        "event_name": "Purchase",
        "user_id": f"u{random.randrange(20_000)}",
        "value": 1999,
        "currency": "USD",
        "campaign_id": f"campaign-{n % 20}",
    }


def web_event(n: int) -> dict[str, object]:
    """A web shop's event: a page view with its context and contact data, or a purchase."""
    user = f"u{random.randrange(20_000)}"
    body: dict[str, object] = {
        "event_id": uuid.uuid4().hex,
        "event_name": "page_view",
        "user_id": user,
        "campaign_id": f"campaign-{n % 20}",
        "context": {
            "page_url": f"https://shop.example/products/{n % 500}?utm_source=google"
            "&utm_medium=cpc&utm_campaign=spring&gclid=Cj0KCQiA" + uuid.uuid4().hex[:16],
            "referrer": "https://www.google.com/",
            "user_agent": UA,
            "ip": f"203.0.113.{n % 250}",
        },
        "user": {"email": f"{user}@example.com", "phone": "+14155550123"},
        "properties": {"path": f"/products/{n % 500}", "title": "Product page"},
    }
    if n % 10 == 0:
        body["event_name"] = "Purchase"
        body["value"] = random.randrange(500, 50_000)
        body["currency"] = "USD"
        body["properties"] = {
            "order_id": f"o-{n}",
            "items": [{"sku": f"sku-{n % 97}", "quantity": 1, "price": 1999}],
        }
    return body


PAYLOADS = {"web": web_event, "minimal": minimal_event}


async def send(url: str, events: int, payload: str) -> tuple[int, int]:
    """Accepted events, and the bytes of their JSON as sent (each event on its own)."""
    headers = {"Authorization": f"Bearer {WRITE}", "User-Agent": UA}
    accepted = sent_bytes = 0
    async with httpx.AsyncClient(headers=headers, timeout=30) as client:
        for start in range(0, events, 100):
            batch = [PAYLOADS[payload](n) for n in range(start, min(events, start + 100))]
            sent_bytes += sum(len(json.dumps(e, separators=(",", ":"))) for e in batch)
            response = await client.post(f"{url}/v1/batch", json={"batch": batch})
            response.raise_for_status()
            accepted += int(response.json()["accepted"])
    return accepted, sent_bytes


def wait_counted(url: str, timeout_secs: float) -> None:
    deadline = time.monotonic() + timeout_secs
    while time.monotonic() < deadline:
        ready = httpx.get(f"{url}/readyz").json()
        if ready["processor"].get("lag_events") == 0:
            return
        time.sleep(0.2)
    raise SystemExit("the processor did not catch up in time")


def size_of(path: Path) -> int:
    """Bytes on disk of a file and its -wal and -shm, or of every file under a directory."""
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    siblings = [path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")]
    return sum(p.stat().st_size for p in siblings if p.exists())


def report(data_dir: Path, events: int) -> int:
    total = 0
    for relative, what in PARTS.items():
        size = size_of(data_dir / relative)
        total += size
        print(f"  {what:<50} {size / events:8.0f} B/event  ({size / 1e6:7.1f} MB)")
    print(f"  {'total':<50} {total / events:8.0f} B/event  ({total / 1e6:7.1f} MB)")
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--payload", choices=sorted(PAYLOADS), default="web")
    args = parser.parse_args()
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        env = {
            **os.environ,
            "CONVTRACK_WRITE_KEY": WRITE,
            "CONVTRACK_SERVER_KEY": SERVER,
            "CONVTRACK_LIMITS_USER_EVENTS_PER_SEC": "0",  # the load is not a user's burst
        }
        command = [sys.executable, "-m", "convtrack", "serve", "--port", str(port)]
        server = subprocess.Popen(
            [*command, "--data-dir", str(data_dir)],
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
            accepted, sent_bytes = asyncio.run(send(url, args.events, args.payload))
            wait_counted(url, timeout_secs=300)
        finally:
            code = terminate(server, 30)
        if code != 0:
            raise SystemExit(f"serve exited {code}")
        lake = open_cold_store(str(data_dir / "lake"))
        rows = sum(f.rows for f in read_state(lake, "events").files.values())
        print(
            f"{accepted:,} {args.payload} events accepted, {rows:,} lake rows, default settings;"
            f" {sent_bytes / accepted:.0f} B of JSON sent per event"
        )
        report(data_dir, accepted)


if __name__ == "__main__":
    main()
