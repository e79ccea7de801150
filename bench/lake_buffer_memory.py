"""Memory per event the lake writer holds while it buffers, next to the record's bytes.

The lake writer (``store/cold/writer.py``) keeps what it read since its last flush
as decoded processed events, up to ``cold.flush_max_rows`` for up to
``cold.flush_interval_secs``. This decodes N processed records of a web purchase
(full context, an item, contact data) as it does, holds them, and prints the
memory they take per event (tracemalloc) next to the encoded record's size, and
what a full buffer of the default ``flush_max_rows`` would take.

    .venv/bin/python bench/lake_buffer_memory.py            # N = 20,000 (a few seconds)
"""

from __future__ import annotations

import argparse
import time
import tracemalloc

from convtrack.config import ColdSettings
from convtrack.model.event import Envelope
from convtrack.model.processed import ProcessedEvent, decode_processed, encode_processed

UA = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/131.0 Safari/537.36"


def web_purchase(i: int, now_us: int) -> bytes:
    event = Envelope(
        event_id=f"{i:032x}", source="default", event_name="Purchase", event_time_us=now_us,
        received_at_us=now_us, user_id=f"u{i}", value=4999, currency="USD",
        campaign_id="spring",
        properties={"order_id": f"o{i}", "items": [{"sku": "A1", "qty": 1, "price": 4999}]},
        context={
            "page_url": "https://shop.example/thanks?utm_source=google&utm_medium=cpc&gclid=abc",
            "user_agent": UA, "ip": "8.8.8.8", "referrer": "https://www.google.com/",
            "locale": "en-US",
        },
        user={"email": "a@example.com"}, click_ids={"gclid": "abc"},
    )  # fmt: skip
    processed = ProcessedEvent(
        event=event, source_partition=0, source_offset=i, campaign_id="spring",
        event_date="2026-12-04", is_conversion=True, campaign_source="google",
        campaign_medium="cpc", touch_source="google", touch_medium="cpc",
        touch_campaign=None, touch_click_ids={"gclid": "abc"}, device_type="desktop",
        country_code="US", is_bot=False, session_valid=True, logged_at_us=now_us,
        processed_at_us=now_us, counted_at_us=now_us,
    )  # fmt: skip
    return encode_processed(processed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=20_000)
    args = parser.parse_args()
    now_us = time.time_ns() // 1000
    records = [web_purchase(i, now_us) for i in range(args.n)]
    tracemalloc.start()
    held = [decode_processed(record) for record in records]
    used, _peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    per_event = used / len(held)
    encoded = sum(map(len, records)) / len(records)
    full = ColdSettings().flush_max_rows
    print(f"buffered as the lake writer holds it: {per_event:,.0f} B per event ({len(held):,})")
    print(f"  reference, the encoded processed record: {encoded:,.0f} B")
    print(f"  a full buffer (cold.flush_max_rows = {full:,}): {per_event * full / 1e6:,.0f} MB")


if __name__ == "__main__":
    main()
