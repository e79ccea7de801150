"""Lake benchmarks: write throughput of the cold store, and a campaign-by-day report
over millions of events through `convtrack query`, side by side with DuckDB alone.

    .venv/bin/python bench/lake_query.py --events 10000000 --write-events 200000

The report's reference is the same SQL run by DuckDB in this process on the same
files (no CLI start-up, no manifest reading): the difference is our overhead.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from convtrack.clock import ManualClock
from convtrack.log.base import LogRecord
from convtrack.log.sqlite import SqliteLog
from convtrack.model.event import Envelope
from convtrack.model.processed import ProcessedEvent, encode_processed
from convtrack.observe.metrics import Metrics
from convtrack.runtime.backends import open_cold_store
from convtrack.store.cold import schema
from convtrack.store.cold.base import ColdStore
from convtrack.store.cold.counted import COUNTED
from convtrack.store.cold.manifest import DataFile, ManifestEntry, commit_change
from convtrack.store.cold.query import connect
from convtrack.store.cold.tables import EventsSource, partition_segment
from convtrack.store.cold.writer import TableWriter, parquet_bytes

DAY_US = 86_400_000_000
T0 = 1_793_491_200_000_000  # 2026-10-31T00:00:00Z
REPORT = (
    "select event_date, campaign_id, count(*) as conversions, sum(value) as value"
    f" from events where {COUNTED} group by all order by all"
)


def synthetic_table(n: int, day: int, campaign: int, offset: int) -> pa.Table:
    idx = pa.array(range(offset, offset + n), pa.int64())
    text_idx = pc.cast(idx, pa.string())
    date = time.strftime("%Y-%m-%d", time.gmtime((T0 + day * DAY_US) / 1e6))
    ts = pc.add(pc.multiply(idx, 1), T0 + day * DAY_US).cast(schema.UTC_US)

    def const(value: object, type_: pa.DataType) -> pa.Array:
        return pa.array([value] * n, type_) if n < 1 else pa.repeat(pa.scalar(value, type_), n)

    columns = {
        "event_id": pc.binary_join_element_wise("e", text_idx, ""),
        "event_name": const("Purchase", pa.string()),
        "source": const("default", pa.string()),
        "user_id": pc.binary_join_element_wise(
            "u", pc.cast(pc.bit_wise_and(idx, 65535), pa.string()), ""
        ),
        "session_id": const(None, pa.string()),
        "event_time": ts,
        "received_at": ts,
        "value": pc.add(pc.bit_wise_and(idx, 1023), 100),
        "currency": const("USD", pa.string()),
        "campaign_id": const(f"campaign-{campaign:02d}", pa.string()),
        "campaign_source": const("google", pa.string()),
        "campaign_medium": const("cpc", pa.string()),
        "touch_source": const(None, pa.string()),
        "touch_medium": const(None, pa.string()),
        "touch_campaign": const(None, pa.string()),
        "device_type": const("mobile", pa.string()),
        "country_code": const("US", pa.string()),
        "is_bot": const(False, pa.bool_()),
        "session_valid": const(True, pa.bool_()),
        "is_conversion": const(True, pa.bool_()),
        "event_date": const(date, pa.string()),
        "properties": const('{"sku":"sku-1"}', pa.string()),
        "context": const("{}", pa.string()),
        "user": const("{}", pa.string()),
        "click_ids": const("{}", pa.string()),
        "consent": const("{}", pa.string()),
        "extra": const("{}", pa.string()),
        "event_id_derived": const(False, pa.bool_()),
        "key_role": const("write", pa.string()),
        "logged_at": ts,
        "processed_at": ts,
        "counted_at": ts,
        "source_partition": const(0, pa.int32()),
        "source_offset": idx,
    }
    return pa.Table.from_pydict(columns, schema=schema.EVENTS)


def build_lake(root: Path, events: int, days: int, campaigns: int) -> ColdStore:
    lake = open_cold_store(str(root / "lake"))
    per_file = events // (days * campaigns)
    offset = 0
    adds = []
    for day in range(days):
        for campaign in range(campaigns):
            table = synthetic_table(per_file, day, campaign, offset)
            date = table.column("event_date")[0].as_py()
            directory = (
                f"events/{partition_segment('event_date', date)}/"
                f"{partition_segment('campaign_id', f'campaign-{campaign:02d}')}"
            )
            path = f"{directory}/compact-{offset:012d}.parquet"
            lake.put(path, parquet_bytes(table))
            adds.append(DataFile(path=path, rows=per_file, partition_date=date))
            offset += per_file
    entry = ManifestEntry(table="events", kind="compact", adds=adds, created_at_us=T0)
    assert commit_change(lake, entry, 1), "the bench's lake directory must start empty"
    return lake


def time_cli(data_dir: Path, runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "convtrack",
                "query",
                "--data-dir",
                str(data_dir),
                "--format",
                "csv",
                REPORT,
            ],
            check=True,
            capture_output=True,
        )
        times.append(time.perf_counter() - started)
    return times


def time_duckdb_alone(lake: ColdStore, runs: int) -> list[float]:
    import duckdb

    con = duckdb.connect()
    files = ", ".join(f"'{p}'" for p in sorted(str(f) for f in Path(lake.uri).rglob("*.parquet")))
    sql = REPORT.replace("from events", f"from read_parquet([{files}])")
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        con.execute(sql).fetchall()
        times.append(time.perf_counter() - started)
    return times


def time_writer(root: Path, events: int) -> float:
    log = SqliteLog(root / "processed.db", synchronous="normal")
    records = []
    for i in range(events):
        envelope = Envelope(
            event_id=f"w{i}",
            source="default",
            event_name="Purchase",
            event_time_us=T0 + i,
            received_at_us=T0 + i,
            user_id=f"u{i % 5000}",
            value=100 + i % 900,
            currency="USD",
            campaign_id=f"c{i % 20}",
            properties={"sku": "sku-1"},
        )
        processed = ProcessedEvent(
            event=envelope,
            source_partition=0,
            source_offset=i,
            campaign_id=f"c{i % 20}",
            event_date="2026-11-28",
            is_conversion=True,
            logged_at_us=T0,
            processed_at_us=T0,
            counted_at_us=T0,
        )
        records.append(LogRecord("k", encode_processed(processed)))
    for start in range(0, len(records), 20_000):
        asyncio.run(log.append(records[start : start + 20_000]))
    lake = open_cold_store(str(root / "writer-lake"))
    writer = TableWriter(
        lake=lake,
        source=EventsSource(log.consumer("cold")),
        clock=ManualClock(),
        metrics=Metrics(),
        flush_interval_secs=3600,
        flush_max_rows=100_000,
    )
    started = time.perf_counter()
    while writer.poll_once(timeout_secs=0.0):
        pass
    writer.flush()
    elapsed = time.perf_counter() - started
    log.close()
    return events / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--campaigns", type=int, default=20)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--write-events", type=int, default=200_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        lake = build_lake(root, args.events, args.days, args.campaigns)
        print(f"built a lake of {args.events:,} events in {time.perf_counter() - started:.1f} s")
        con = connect(lake)
        (count,) = con.execute("select count(*) from events").fetchone() or (0,)
        print(f"rows visible through the manifest: {count:,}")
        cli = time_cli(root, args.runs)
        alone = time_duckdb_alone(lake, args.runs)
        print(f"campaign-by-day report ({args.days * args.campaigns} groups), {args.runs} runs:")
        print(
            f"  convtrack query (whole CLI process): median {statistics.median(cli):.3f} s,"
            f" best {min(cli):.3f} s"
        )
        print(
            f"  DuckDB alone, same files, in-process: median {statistics.median(alone):.3f} s,"
            f" best {min(alone):.3f} s"
        )
        rate = time_writer(root, args.write_events)
        print(
            f"cold-store write throughput ({args.write_events:,} events, decode + Parquet zstd"
            f" + manifest): {rate:,.0f} events/s"
        )


if __name__ == "__main__":
    main()
