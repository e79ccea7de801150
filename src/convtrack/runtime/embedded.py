"""The embedded pipeline: everything in one process on SQLite and local files."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping

from convtrack.clock import Clock, SystemClock
from convtrack.collect.app import App
from convtrack.collect.attribution import AttributionApi
from convtrack.collect.auth import Keyring
from convtrack.collect.clientip import ClientIpResolver
from convtrack.collect.deadletters import DeadLettersApi
from convtrack.collect.ingest import Collector, IngestLimits
from convtrack.collect.ratelimit import TokenBuckets
from convtrack.collect.reports import ReportsApi
from convtrack.collect.stats import StatsApi
from convtrack.collect.tokens import ConversionTokens
from convtrack.config import Settings
from convtrack.deliver.deadletters import DeadLetterStore, store_path
from convtrack.log.base import EventLog, LogConsumer
from convtrack.log.sqlite import SqliteLog
from convtrack.model.currency import iso4217_codes
from convtrack.model.validate import Rules
from convtrack.observe.metrics import Metrics
from convtrack.process.base import Step
from convtrack.process.enrich import ENRICHERS
from convtrack.process.runner import ProcessorRunner
from convtrack.process.sessions import SessionStep
from convtrack.process.steps import (
    CheckStep,
    DedupeCommitStep,
    EnrichStep,
    RouteStep,
)
from convtrack.runtime.deliveries import build_deliveries
from convtrack.runtime.keys import ProvisionedKeys, provision_keys
from convtrack.runtime.token_secrets import provision_token_secrets
from convtrack.store.cold.lake import Lake
from convtrack.store.cold.maintain import compact, expire, purge_removed, utc_date
from convtrack.store.cold.tables import EventsSource, RejectsSource
from convtrack.store.cold.writer import ColdStoreRunner, TableWriter
from convtrack.store.hot.base import HotStore
from convtrack.store.hot.sqlite import SqliteHotStore
from convtrack.store.rejects.sqlite import SqliteRejectStore


class Pipeline:
    """The running parts and how to stop them in order."""

    def __init__(
        self,
        settings: Settings,
        clock: Clock | None = None,
        environ: Mapping[str, str] | None = None,
        delivery_sleep: Callable[[float], None] | None = None,
    ) -> None:
        """``delivery_sleep`` waits between delivery attempts (tests move a clock instead)."""
        clock = clock or SystemClock()
        data_dir = settings.data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        iso4217_codes()  # load the currency table now, not on the first request
        self.settings = settings
        self.metrics = Metrics()
        self.keys: ProvisionedKeys = provision_keys(settings, environ)
        token_secrets = provision_token_secrets(settings, environ)
        self.log = SqliteLog(
            data_dir / "log" / "events.db",
            synchronous=settings.log.sqlite_synchronous,
            max_pending_events=settings.log.max_pending_events,
            max_commit_events=settings.log.max_commit_events,
            clock=clock,
            on_commit=self.metrics.on_log_commit,
        )
        self.rejects = SqliteRejectStore(
            data_dir / "rejects" / "rejects.db",
            max_rows=settings.rejects.max_rows,
            max_body_chars=settings.rejects.max_body_bytes,
            on_drop=self.metrics.rejects_dropped.inc,
        )
        limits = settings.limits
        collector = Collector(
            log=self.log,
            rejects=self.rejects,
            metrics=self.metrics,
            clock=clock,
            rules=Rules(
                max_event_age_secs=limits.max_event_age_secs,
                max_future_secs=limits.max_future_secs,
                max_properties=limits.max_properties,
                max_depth=limits.max_properties_depth,
                max_string_chars=limits.max_string_chars,
            ),
            limits=IngestLimits(
                max_event_bytes=limits.max_event_bytes,
                max_batch_bytes=limits.max_batch_bytes,
                max_batch_events=limits.max_batch_events,
            ),
            user_buckets=TokenBuckets(limits.user_events_per_sec, limits.user_burst, clock),
            key_buckets=TokenBuckets(limits.key_events_per_sec, 0, clock),
            client_ips=ClientIpResolver(settings.collect.trusted_proxies),
            token_secrets=token_secrets,
        )
        self.processed = SqliteLog(
            data_dir / "log" / "processed.db",
            # Safe without an fsync per commit: a power cut that loses its tail also
            # rewinds the processor (it resumes after the last published event) and the
            # fsynced event log replays what is missing.
            synchronous="normal",
            max_pending_events=settings.log.max_pending_events,
            max_commit_events=settings.log.max_commit_events,
            clock=clock,
        )
        self.hot = SqliteHotStore(
            data_dir / "hot" / "hot.db",
            dedup_window_secs=settings.dedup.window_secs,
            minute_retention=settings.hot.minute_retention,
        )
        self.processor = ProcessorRunner(
            event_log=self.log,
            processed=self.processed,
            hot=self.hot,
            make_chain=lambda consumer: build_chain(
                settings, self.hot, consumer, self.processed, clock, self.metrics
            ),
            clock=clock,
            metrics=self.metrics,
            max_batch=settings.process.max_batch_events,
        )
        self.lake = Lake.open(
            settings.lake_uri,
            endpoint_url=settings.cold.s3_endpoint_url or None,
            create_bucket=settings.cold.create_bucket,
            environ=environ,
        )
        self.cold = ColdStoreRunner(
            [
                TableWriter(
                    lake=self.lake,
                    source=source,
                    clock=clock,
                    metrics=self.metrics,
                    flush_interval_secs=settings.cold.flush_interval_secs,
                    flush_max_rows=settings.cold.flush_max_rows,
                )
                for source in (
                    EventsSource(self.processed.consumer("cold")),
                    RejectsSource(self.rejects),
                )
            ],
            self.metrics,
            maintain=lambda: maintain_lake(self.lake, settings, clock),
            maintain_interval_secs=settings.cold.compaction_interval_secs,
        )
        env = os.environ if environ is None else environ
        self.deadletters = DeadLetterStore(store_path(data_dir))
        self.deliveries = build_deliveries(
            settings,
            processed=self.processed,
            deadletters=self.deadletters,
            clock=clock,
            metrics=self.metrics,
            environ=env,
            sleep=delivery_sleep,
        )
        stats = StatsApi(
            hot=self.hot,
            clock=clock,
            lag=self.processor.lag,
            live_window_minutes=settings.hot.live_window_minutes,
            latency_window_minutes=settings.hot.latency_window_minutes,
            dead_letters=self.deadletters.total,
        )
        self.app = App(
            stats=stats,
            reports=ReportsApi(lake=self.lake, hot=self.hot, clock=clock),
            attribution=AttributionApi(lake=self.lake),
            collector=collector,
            keyring=Keyring(self.keys.keys),
            log=self.log,
            rejects=self.rejects,
            metrics=self.metrics,
            cors_max_age_secs=settings.collect.cors_max_age_secs,
            tokens=ConversionTokens(
                secrets=token_secrets, ttl_secs=settings.tokens.ttl_secs, clock=clock
            ),
            components={
                "processor": self.processor.health,
                "cold": self.cold.health,
                **{f"deliver-{r.name}": r.health for r in self.deliveries},
            },
            dead_letters=DeadLettersApi(self.deadletters, [d.name for d in settings.destinations]),
        )

    def start(self) -> None:
        """Start the background stages: the processor, the cold store, the deliveries."""
        self.processor.start()
        self.cold.start()
        for runner in self.deliveries:
            runner.start()

    def close(self) -> None:
        """Finish pending appends, let the processor catch up, then close the stores."""
        self.log.stop_writes()
        self.processor.stop(drain_secs=3.0)
        self.cold.stop(flush=True)
        for runner in self.deliveries:
            runner.stop()
        self.deadletters.close()
        self.processed.close()
        self.hot.close()
        self.rejects.close()
        self.log.close()


def build_chain(
    settings: Settings,
    hot: HotStore,
    consumer: LogConsumer,
    processed: EventLog,
    clock: Clock,
    metrics: Metrics,
) -> Step:
    """check → sessions → enrich → route → dedupe-and-commit."""
    commit = DedupeCommitStep(hot, consumer, processed, clock, metrics)
    route = RouteStep(
        settings.conversions.event_names, settings.conversions.count_bots, next_step=commit
    )
    enrich = EnrichStep(ENRICHERS, metrics, next_step=route)
    sessions = SessionStep(
        hot,
        ttl_secs=settings.sessions.ttl_secs,
        lookback_secs=settings.sessions.lookback_days * 86_400,
        next_step=enrich,
    )
    return CheckStep(clock, metrics, next_step=sessions)


def maintain_lake(lake: Lake, settings: Settings, clock: Clock) -> None:
    """Compact closed days, apply retention, delete files removed long enough ago."""
    now = clock.now_us()
    for table in ("events", "rejects"):
        compact(lake, table, closed_before=utc_date(now), now_us=now)
        if settings.cold.retention_days:
            expire(lake, table, keep_from=utc_date(now, settings.cold.retention_days), now_us=now)
        purge_removed(lake, table, now_us=now, grace_secs=settings.cold.removed_grace_secs)
