"""Delivery latency: from the accepting answer to acceptance by each platform stand-in.

    .venv/bin/python bench/deliver_latency.py                    # 1,000 events/s, 30 s, 200 ms
    .venv/bin/python bench/deliver_latency.py --rate 500 --seconds 10 --platform-ms 800

Starts a real ``python -m convtrack serve`` (the embedded default: SQLite log,
in-process processor and delivery) with three destinations, each pointed at
a stand-in from ``src/convtrack/testing/standins`` running in this process on 127.0.0.1:

- ``meta_capi`` → ``MetaStandIn`` (checks every event against the contract);
- ``tiktok`` → ``TikTokStandIn``;
- ``webhook`` → a receiver that verifies the Standard Webhooks signature.

Each stand-in takes ``--platform-ms`` before it checks and accepts a request
(the tutorial quotes 200-800 ms per platform call). Destinations keep their
default batch settings (ad platforms: 0.5 s wait; webhook: 500 events or 5 s)
and ``max_in_flight`` 1.

The load: ``--senders`` asyncio tasks post ``POST /v1/batch`` with
``--batch-size`` Purchase events each, paced to ``--rate`` events/s for
``--seconds``. For every event the time its batch was answered (accepted:
each event is durable before the answer) is noted; each stand-in notes the
time it accepted each event id. Latency = accepted by the platform minus answered
to the sender, per destination, on this machine's one clock.

References in the same run: the senders' own round trip (request → answer);
the floor a delivery cannot beat, the stand-in's configured latency; and the
processor's share, from ``bench/e2e_latency.py``'s probe: one event every
100 ms on its own campaign, 202 → counted in ``GET /v1/stats/conversions``.
Never a test assertion: the figures depend on the machine's load.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

sys.path[:0] = [str(Path(__file__).resolve().parent.parent), str(Path(__file__).parent)]

from benchkit import free_port, percentile  # noqa: E402
from convtrack.testing.standins.base import Answer, Request, StandIn  # noqa: E402
from convtrack.testing.standins.meta import MetaStandIn  # noqa: E402
from convtrack.testing.standins.tiktok import TikTokStandIn  # noqa: E402
from e2e_latency import probe  # noqa: E402

WRITE = "bench_write_key_0123456789"
SERVER = "bench_server_key_0123456789"
ADMIN = "bench_admin_key_0123456789"
PIXEL = "1234567890"
META_TOKEN = "meta-bench-token"
TIKTOK_SOURCE = "CBENCH0123456789"
TIKTOK_TOKEN = "tiktok-bench-token"
HOOK_SECRET = "whsec_" + base64.b64encode(bytes(range(32))).decode()
UA = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/131.0 Safari/537.36"
PAGE = "https://shop.example/thanks"


class Timing(StandIn):
    """Notes when the platform accepted each event id (a mix-in before the stand-in)."""

    accepted_at: dict[str, float]

    def check(self, request: Request) -> Answer:
        before = len(self.accepted)
        answer = super().check(request)
        now = time.time()
        for event_id in self.accepted[before:]:
            self.accepted_at.setdefault(event_id, now)
        return answer


class TimedMeta(Timing, MetaStandIn):
    pass


class TimedTikTok(Timing, TikTokStandIn):
    pass


class WebhookReceiver(StandIn):
    """Verifies the signature; accepts the batch's events once per ``webhook-id``."""

    def __init__(self, secret: str) -> None:
        super().__init__()
        self.key = base64.b64decode(secret.removeprefix("whsec_"))
        self.seen: set[str] = set()
        self.invalid = 0

    def check(self, request: Request) -> Answer:
        msg_id = request.headers.get("webhook-id", "")
        stamp = request.headers.get("webhook-timestamp", "")
        signed = f"{msg_id}.{stamp}.".encode() + request.body
        digest = hmac.new(self.key, signed, hashlib.sha256).digest()
        expected = "v1," + base64.b64encode(digest).decode()
        if expected not in request.headers.get("webhook-signature", "").split():
            self.invalid += 1
            return Answer(401, body=b"bad signature")
        if msg_id not in self.seen:
            self.seen.add(msg_id)
            self.accepted += [e["event_id"] for e in json.loads(request.body)["events"]]
        return Answer(204)


class TimedWebhook(Timing, WebhookReceiver):
    pass


def config_text(meta: StandIn, tiktok: StandIn, hook: StandIn) -> str:
    return (
        f'[[destinations]]\nkind = "meta_capi"\nname = "meta"\nendpoint = "{meta.base_url}"\n'
        f'pixel_id = "{PIXEL}"\naccess_token_env = "META_TOKEN"\n\n'
        f'[[destinations]]\nkind = "tiktok"\nname = "tiktok"\nendpoint = "{tiktok.base_url}"\n'
        f'event_source_id = "{TIKTOK_SOURCE}"\naccess_token_env = "TIKTOK_TOKEN"\n\n'
        f'[[destinations]]\nkind = "webhook"\nname = "crm"\nendpoint = "{hook.base_url}/hook"\n'
        'secret_env = "HOOK_SECRET"\n'
    )


def event(event_id: str) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "event_name": "Purchase",
        "user_id": f"u-{event_id[:12]}",
        "email": f"{event_id[:8]}@example.com",
        "value": 1999,
        "currency": "EUR",
        "context": {"page_url": PAGE, "user_agent": UA, "ip": "203.0.113.7"},
    }


async def sender(
    url: str, rate_per_sender: float, batch: int, seconds: float,
    answered: dict[str, float], round_trips: list[float], refused: list[int],
) -> None:  # fmt: skip
    headers = {"Authorization": f"Bearer {WRITE}"}
    async with httpx.AsyncClient(headers=headers, timeout=30) as client:
        started = time.perf_counter()
        sent = 0
        while time.perf_counter() - started < seconds:
            ids = [uuid.uuid4().hex for _ in range(batch)]
            posted = time.perf_counter()
            response = await client.post(f"{url}/v1/batch", json={"batch": [event(i) for i in ids]})
            now = time.time()
            round_trips.append(time.perf_counter() - posted)
            if response.status_code != 200:
                refused.append(response.status_code)
            else:
                rejected = {r["event_id"] for r in response.json().get("rejected", [])}
                for event_id in ids:
                    if event_id not in rejected:
                        answered[event_id] = now
            sent += batch
            delay = started + sent / rate_per_sender - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)


async def load(
    url: str, rate: int, senders: int, batch: int, seconds: float, visible: list[float]
) -> tuple[dict[str, float], list[float], list[int]]:
    answered: dict[str, float] = {}
    round_trips: list[float] = []
    refused: list[int] = []
    await asyncio.gather(
        *(sender(url, rate / senders, batch, seconds, answered, round_trips, refused)
          for _ in range(senders)),
        probe(url, seconds, visible, []),
    )  # fmt: skip
    return answered, round_trips, refused


def row(name: str, values_ms: list[float], note: str = "") -> str:
    if not values_ms:
        return f"| {name} | – | – | – | – | {note} |"
    cells = [percentile(values_ms, q) for q in (0.5, 0.95, 0.99)] + [max(values_ms)]
    return f"| {name} | " + " | ".join(f"{c:,.0f}" for c in cells) + f" | {note} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=int, default=1000, help="events/s sent")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--platform-ms", type=float, default=200.0, help="stand-in latency")
    parser.add_argument("--batch-size", type=int, default=20, help="events per /v1/batch")
    parser.add_argument("--senders", type=int, default=4, help="concurrent load tasks")
    parser.add_argument("--drain-secs", type=float, default=60.0, help="wait for stragglers")
    args = parser.parse_args()

    meta = TimedMeta(pixel_id=PIXEL, access_token=META_TOKEN)
    tiktok = TimedTikTok(event_source_id=TIKTOK_SOURCE, access_token=TIKTOK_TOKEN)
    hook = TimedWebhook(HOOK_SECRET)
    standins: dict[str, Timing] = {"meta_capi": meta, "tiktok": tiktok, "webhook": hook}
    for standin in standins.values():
        standin.latency_secs = args.platform_ms / 1000
        standin.accepted_at = {}
    port = free_port()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as data_dir:
        config = Path(data_dir) / "convtrack.toml"
        config.write_text(config_text(meta, tiktok, hook))
        env = {
            **os.environ,
            "CONVTRACK_WRITE_KEY": WRITE, "CONVTRACK_SERVER_KEY": SERVER,
            "CONVTRACK_ADMIN_KEY": ADMIN, "CONVTRACK_LIMITS_USER_EVENTS_PER_SEC": "0",
            "META_TOKEN": META_TOKEN, "TIKTOK_TOKEN": TIKTOK_TOKEN, "HOOK_SECRET": HOOK_SECRET,
        }  # fmt: skip
        server = subprocess.Popen(
            [sys.executable, "-m", "convtrack", "serve", "--port", str(port),
             "--data-dir", str(Path(data_dir) / "data"), "--config", str(config)],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(f"{url}/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit("convtrack serve did not start")
                time.sleep(0.05)
            started = time.monotonic()
            visible: list[float] = []
            answered, round_trips, refused = asyncio.run(
                load(url, args.rate, args.senders, args.batch_size, args.seconds, visible)
            )
            load_secs = time.monotonic() - started
            load_during = os.getloadavg()
            end = time.monotonic() + args.drain_secs
            while time.monotonic() < end and any(
                not all(i in s.accepted_at for i in answered) for s in standins.values()
            ):
                time.sleep(0.1)
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(30)
            for standin in standins.values():
                standin.close()

    sent = len(answered)
    print(f"convtrack serve (embedded), 3 destinations, stand-in latency {args.platform_ms:g} ms")
    print(f"load: {sent:,} events accepted in {load_secs:.1f} s = {sent / load_secs:,.0f}/s "
          f"(target {args.rate:,}/s), POST /v1/batch x {args.batch_size} events, "
          f"{args.senders} senders; refused batches: {len(refused)}")  # fmt: skip
    print(f"CPUs: {os.cpu_count()}, load average before {load_before[0]:.1f}, "
          f"at the end of the load {load_during[0]:.1f} (1 min)")  # fmt: skip
    print()
    print("| from the accepting answer to | p50 ms | p95 ms | p99 ms | max ms | events |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, standin in standins.items():
        times = standin.accepted_at
        delays = [(times[i] - t) * 1000 for i, t in answered.items() if i in times]
        twice = len(standin.accepted) - len(set(standin.accepted))
        note = f"{len(delays):,} of {sent:,}" + (f", {twice} twice" if twice else "")
        print(row(f"accepted by {name}", delays, note))
    floor = [args.platform_ms] * max(1, sent)
    print(row("reference: the stand-in's own latency (floor)", floor, "configured"))
    print(row("reference: 202 → counted in /v1/stats (processor)",
              [v * 1000 for v in visible], f"{len(visible):,} probes"))  # fmt: skip
    print(row("reference: the sender's round trip (request → answer)",
              [r * 1000 for r in round_trips], f"{len(round_trips):,} batches"))  # fmt: skip
    if isinstance(hook, WebhookReceiver) and hook.invalid:
        print(f"webhook requests with a bad signature: {hook.invalid}")


if __name__ == "__main__":
    main()
