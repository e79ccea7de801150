"""Where convtrack's ingest time goes: the same app with one part stubbed out at a time.

    .venv/bin/python bench/ablation.py [--commit REV] [--duration 5 --warmup 1 --repeat 3]

Each variant runs convtrack's real ``Pipeline`` app in its own process, on the
uvicorn settings of ``convtrack serve`` (``bench/stub_app.config``), and is loaded
by wrk exactly like ``bench/ingest.py`` does. A diagnostic, not a product figure:
the variants drop guarantees (durability, validation) on purpose.

    full         the app as ``convtrack serve`` builds it (sanity check vs ingest.py),
                 background stages (processor, cold store) started like serve does
    no-processor the background stages are not started: ingest alone in the process
    no-metrics   Prometheus counters/histograms replaced by no-ops
    mem-log      EventLog.append answers at once: no writer-thread hand-off, no SQLite
    no-validate  validate_event replaced by a bare Envelope build (no checks)
    lean         no-processor + no-metrics + mem-log + no-validate together
    gc-tuned     the full app, plus gc.freeze() after start-up and a gen-0 threshold of
                 50,000 allocations (700 by default): what GC tuning alone would buy

Internal APIs are patched on purpose: if one moved, update this script.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import ingest

VARIANTS = ("full", "no-processor", "no-metrics", "mem-log", "no-validate", "lean", "gc-tuned")


class _NoopMetric:
    def labels(self, *_: object) -> _NoopMetric:
        return self

    def inc(self, *_: object) -> None:
        pass

    def observe(self, *_: object) -> None:
        pass

    def set(self, *_: object) -> None:
        pass


def build_app(variant: str, data_dir: Path) -> Any:
    """convtrack's app for one variant (run inside the server process)."""
    from convtrack.collect import ingest as collect_ingest
    from convtrack.config import load_settings
    from convtrack.model.event import Envelope
    from convtrack.runtime.embedded import Pipeline

    settings = load_settings(overrides={"server": {"data_dir": str(data_dir)}})
    pipeline = Pipeline(settings)
    lean = {"no-processor", "no-metrics", "mem-log", "no-validate"}
    parts = lean if variant == "lean" else {variant}
    if "no-metrics" in parts:
        metrics = pipeline.metrics
        for name, value in vars(metrics).items():
            if hasattr(value, "labels") or hasattr(value, "inc") or hasattr(value, "observe"):
                setattr(metrics, name, _NoopMetric())
    if "mem-log" in parts:

        async def append(records: Any) -> list[int]:
            return list(range(len(records)))

        pipeline.log.append = append  # type: ignore[method-assign]
    if "no-validate" in parts:

        def validate(body: dict[str, Any], facts: Any, rules: Any) -> Any:
            return Envelope(
                event_id=body["event_id"], source=facts.source, event_name=body["event_name"],
                event_time_us=facts.received_at_us, received_at_us=facts.received_at_us,
                user_id=body.get("user_id"), properties=body.get("properties") or {},
                context=body.get("context") or {},
            )  # fmt: skip

        collect_ingest.validate_event = validate  # type: ignore[assignment]
    if "gc-tuned" in parts:
        import gc

        gc.collect()
        gc.freeze()
        gc.set_threshold(50_000, 20, 100)
    if "no-processor" not in parts and hasattr(pipeline, "start"):
        pipeline.start()  # as runtime/serve.py does
    return pipeline.app


def serve(variant: str, port: int, data_dir: Path) -> None:
    import asyncio

    import uvicorn

    from stub_app import config

    app = build_app(variant, data_dir)
    base = config("127.0.0.1", port)
    server = uvicorn.Server(
        uvicorn.Config(
            app, host=base.host, port=base.port, http=base.http, lifespan=base.lifespan,
            access_log=base.access_log, log_config=None, server_header=base.server_header,
            backlog=base.backlog, timeout_keep_alive=base.timeout_keep_alive,
        )
    )  # fmt: skip
    try:
        import uvloop
    except ImportError:
        asyncio.run(server.serve())
    else:
        uvloop.run(server.serve())


def drive(args: argparse.Namespace) -> int:
    if shutil.which("wrk") is None:
        print("bench/ablation.py needs wrk on PATH (apt-get install -y wrk)", file=sys.stderr)
        return 2
    pin = ingest.pinning(not args.no_pin)
    print(f"{pin.note}; load average (1 min) {os.getloadavg()[0]:.2f}", flush=True)
    work = Path(tempfile.mkdtemp(prefix="convtrack-ablation-"))
    rows = []
    try:
        code_env, code = ingest.code_under_test(args.commit, work)
        print(f"convtrack code: {code}", flush=True)
        env = {
            **os.environ,
            **code_env,
            "CONVTRACK_WRITE_KEY": ingest.WRITE_KEY,
            "CONVTRACK_SERVER_KEY": ingest.SERVER_KEY,
            "CONVTRACK_ADMIN_KEY": ingest.ADMIN_KEY,
            "CONVTRACK_LIMITS_USER_EVENTS_PER_SEC": "1000000",
        }
        run_id = f"a{int(time.time())}"
        # Round-robin repeats: noise from other processes hits every variant alike.
        for round_no, variant in [(n, v) for n in range(args.repeat) for v in args.variants]:
            port = ingest.free_port()
            argv = [
                *pin.server, sys.executable, __file__, "--serve", variant, "--port", str(port),
                "--data-dir", str(work / f"{variant}-{round_no}"),
            ]  # fmt: skip
            server = ingest.Server(variant, argv, env, work / f"{variant}-{round_no}.log")
            try:
                server.wait_ready(lambda port=port: ingest.get_ok(port, "/healthz"))
                for mode, connections in (
                    ("track", args.connections),
                    ("batch", args.batch_connections),
                ):
                    common: dict[str, Any] = dict(
                        mode=mode, port=port, connections=connections,
                        batch_size=args.batch_size, users=args.users, pin=pin, server=server,
                    )  # fmt: skip
                    prefix = f"{run_id}-{round_no}-{variant}-{mode}"
                    if args.warmup > 0:
                        ingest.run_wrk(label="warm-up", prefix=f"{prefix}-w",
                                       duration=args.warmup, **common)  # fmt: skip
                    r = ingest.run_wrk(label=variant, prefix=prefix,
                                       duration=args.duration, **common)  # fmt: skip
                    rows.append(r)
                    print(f"  {variant:<12} {mode:<6} {r.events_per_s:>9,.0f} events/s"
                          f" {ingest.per_cpu_s(r):>9,.0f} events/CPU-s  non-2xx {r.non_2xx}"
                          f"  other processes on server CPU {r.foreign_pct:.0f}%",
                          flush=True)  # fmt: skip
            finally:
                server.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print()
    print(f"best of {args.repeat} (interference only ever slows a run down):")
    print(f"{'variant':<14}{'mode':<7}{'events/s':>11}{'events/CPU-s':>14}{'us CPU/event':>14}"
          f"{'vs full':>9}")  # fmt: skip
    best: dict[tuple[str, str], float] = {}
    for r in rows:
        key = (r.label, r.mode)
        best[key] = max(best.get(key, 0.0), ingest.per_cpu_s(r))
    for mode in ("track", "batch"):
        for variant in args.variants:
            per = best.get((variant, mode), 0.0)
            rate = max(r.events_per_s for r in rows if (r.label, r.mode) == (variant, mode))
            full = best.get(("full", mode))
            gain = f"{per / full:.2f}x" if full else ""
            us = 1e6 / per if per else 0.0
            print(f"{variant:<14}{mode:<7}{rate:>11,.0f}{per:>14,.0f}{us:>14.1f}{gain:>9}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description="convtrack ingest with parts stubbed out")
    parser.add_argument("--serve", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--duration", type=float, default=5)
    parser.add_argument("--warmup", type=float, default=1)
    parser.add_argument("--repeat", type=int, default=3, help="rounds over all variants")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--batch-connections", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--no-pin", action="store_true")
    parser.add_argument("--commit", default=None, help="benchmark the src/ of this git commit")
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.port, args.data_dir)
        return 0
    return drive(args)


if __name__ == "__main__":
    sys.exit(main())
