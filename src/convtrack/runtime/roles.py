"""The four roles a process can run, each assembled from the process's backends.

- ``collect``: the whole HTTP API (ingest, stats, reports, attribution,
  conversion tokens, rejects, dead letters); appends to the event log.
- ``process``: the processor; reads the event log, writes the hot store and
  the processed log.
- ``store``: the cold store; copies the processed log and the rejects into
  the lake, and keeps the lake compact.
- ``deliver``: one runner per destination, reading the processed log.

Each role's modules are imported when its runner is built: a process runs only
what its roles need, and does not pay at every start (on a busy machine,
seconds) for importing the rest (pyarrow for the lake, httpx and the
destinations, ua-parser and the enrichers).

``Role`` names one role and ``Roles`` a process's set of them, parsed once from
the command line (``parse_roles``). The background roles (process, store,
deliver) are each one object in ``runtime/stages.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from enum import StrEnum
from typing import TYPE_CHECKING

from convtrack.api.app import App
from convtrack.api.attribution import AttributionApi
from convtrack.api.deadletters import DeadLettersApi
from convtrack.api.quarantine import QuarantineApi
from convtrack.api.reports import ReportsApi
from convtrack.api.stats import StatsApi
from convtrack.api.tokens import ConversionTokens
from convtrack.clock import Clock
from convtrack.collect.auth import Keyring
from convtrack.collect.clientip import ClientIpResolver
from convtrack.collect.ingest import Collector, IngestLimits
from convtrack.collect.ratelimit import TokenBuckets
from convtrack.config import Settings
from convtrack.errors import ConfigError
from convtrack.log.base import EventLog, LogConsumer, LogLag
from convtrack.model.currency import iso4217_codes
from convtrack.model.validate import Rules
from convtrack.observe.metrics import Metrics
from convtrack.process.base import GROUP as PROCESSOR_GROUP
from convtrack.runtime.api_keys import ProvisionedKeys, provision_keys
from convtrack.runtime.backends import Backends
from convtrack.runtime.token_secrets import provision_token_secrets
from convtrack.store.cold.base import ColdStore
from convtrack.store.hot.base import HotStore

if TYPE_CHECKING:
    from convtrack.deliver.runner import DeliveryRunner
    from convtrack.process.base import Step
    from convtrack.process.runner import ProcessorRunner
    from convtrack.store.cold.runner import ColdStoreRunner


class Role(StrEnum):
    """One role, named as on the command line (``--roles collect,process``)."""

    COLLECT = "collect"
    PROCESS = "process"
    STORE = "store"
    DELIVER = "deliver"


class Roles(tuple[Role, ...]):
    """The roles of one process: each at most once, in pipeline order.

    Built from role names (``Roles(["deliver", "collect"])``) or from the command
    line's text (``parse_roles``); an unknown name is a ``ConfigError``. A tuple, so
    it compares equal to the names it holds; ``str`` gives the command line's syntax.
    """

    __slots__ = ()

    def __new__(cls, names: Iterable[str] = tuple(Role)) -> Roles:
        wanted = list(names)
        unknown = sorted({str(name) for name in wanted if name not in _ROLE_NAMES})
        if unknown:
            raise ConfigError(
                f"unknown role(s): {', '.join(unknown)}; the roles are {', '.join(Role)}"
            )
        return super().__new__(cls, (role for role in Role if role in wanted))

    def __str__(self) -> str:
        return ",".join(self)

    @property
    def full(self) -> bool:
        """Every role: the whole pipeline in this process (the embedded one)."""
        return len(self) == len(Role)

    @property
    def collects(self) -> bool:
        return Role.COLLECT in self

    @property
    def processes(self) -> bool:
        return Role.PROCESS in self

    @property
    def stores(self) -> bool:
        return Role.STORE in self

    @property
    def delivers(self) -> bool:
        return Role.DELIVER in self


_ROLE_NAMES = frozenset(role.value for role in Role)
ROLES = Roles()


def parse_roles(text: str | None) -> Roles:
    """``"collect,process"`` -> the roles in pipeline order; ``None`` or empty: all of them."""
    if text is None or not text.strip():
        return ROLES
    return Roles(name.strip().lower() for name in text.split(",") if name.strip())


def prepare_collect(backends: Backends) -> None:
    """What the collect role does first, before any other role is built."""
    iso4217_codes()  # load the currency table now, not on the first request
    # Open the log now: a bad setting fails the start; a Kafka cluster not up yet
    # leaves it unwritable (ingest answers 503) until it answers.
    backends.events.status()


class CollectRole:
    """The HTTP API and the keys it checks."""

    def __init__(
        self,
        settings: Settings,
        backends: Backends,
        metrics: Metrics,
        clock: Clock,
        environ: Mapping[str, str] | None,
        processor_lag: Callable[[], LogLag],
        hot: HotStore,
        store_keys: bool = True,
    ) -> None:
        """``hot`` is the store the API reads (the runtime's fail-fast view of it);
        ``store_keys=False`` leaves new keys unstored (``serve`` stores them once listening)."""
        self.keys: ProvisionedKeys = provision_keys(settings, environ, store=store_keys)
        token_secrets = provision_token_secrets(settings, environ)
        limits = settings.limits
        collector = Collector(
            log=backends.events,
            rejects=backends.rejects,
            metrics=metrics,
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
            default_currency=settings.collect.currency_of,
        )
        deadletters = backends.deadletters
        stats = StatsApi(
            hot=hot,
            clock=clock,
            lag=processor_lag,
            live_window_minutes=settings.hot.live_window_minutes,
            latency_window_minutes=settings.hot.latency_window_minutes,
            dead_letters=deadletters.total,
        )
        self.app = App(
            stats=stats,
            reports=ReportsApi(lake=backends.lake, hot=hot, clock=clock),
            attribution=AttributionApi(lake=backends.lake),
            collector=collector,
            keyring=Keyring(self.keys.keys),
            log=backends.events,
            rejects=backends.rejects,
            metrics=metrics,
            cors_max_age_secs=settings.collect.cors_max_age_secs,
            tokens=ConversionTokens(
                secrets=token_secrets, ttl_secs=settings.tokens.ttl_secs, clock=clock
            ),
            dead_letters=DeadLettersApi(deadletters, [d.name for d in settings.destinations]),
            quarantine=QuarantineApi(backends.quarantine),
        )


def committed_processor_lag(backends: Backends) -> Callable[[], LogLag]:
    """The processor's lag seen from another process: its positions live in the hot store."""
    return lambda: backends.events.lag(backends.hot.positions(PROCESSOR_GROUP))


def build_processor(
    settings: Settings, backends: Backends, metrics: Metrics, clock: Clock
) -> ProcessorRunner:
    from convtrack.process.runner import ProcessorRunner

    hot, processed = backends.hot, backends.processed
    check_partitions_match(backends.events, processed)
    return ProcessorRunner(
        event_log=backends.events,
        processed=processed,
        hot=hot,
        make_chain=lambda consumer: build_chain(settings, hot, consumer, processed, clock, metrics),
        clock=clock,
        metrics=metrics,
        max_batch=settings.process.max_batch_events,
        quarantine=backends.quarantine,
        poison_attempts=settings.process.poison_attempts,
        stall_secs=settings.process.stall_secs,
    )


def check_partitions_match(events: EventLog, processed: EventLog) -> None:
    """Source partition p publishes to processed partition p (log/published.py):
    the processed log must have exactly the event log's partitions."""
    source, published = events.partition_count(), processed.partition_count()
    if source != published:
        raise ConfigError(
            f"the event log has {source} partitions but the processed log has {published};"
            " they must match (each source partition publishes to the same processed"
            " partition): give both topics the same count, see docs/operations.md,"
            " 'Kafka log'"
        )


def build_chain(
    settings: Settings,
    hot: HotStore,
    consumer: LogConsumer,
    processed: EventLog,
    clock: Clock,
    metrics: Metrics,
) -> Step:
    """check → sessions → enrich → route → dedupe-and-commit."""
    from convtrack.process.enrich import ENRICHERS
    from convtrack.process.sessions import SessionStep
    from convtrack.process.steps import CheckStep, DedupeCommitStep, EnrichStep, RouteStep

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


def build_cold_store(
    settings: Settings, backends: Backends, metrics: Metrics, clock: Clock
) -> ColdStoreRunner:
    from convtrack.store.cold.runner import ColdStoreRunner
    from convtrack.store.cold.tables import EventsSource, RejectsSource
    from convtrack.store.cold.writer import TableWriter

    lake = backends.lake
    return ColdStoreRunner(
        [
            TableWriter(
                lake=lake,
                source=source,
                clock=clock,
                metrics=metrics,
                flush_interval_secs=settings.cold.flush_interval_secs,
                flush_max_rows=settings.cold.flush_max_rows,
                quarantine=backends.quarantine,
            )
            for source in (
                EventsSource(backends.processed.consumer("cold")),
                RejectsSource(backends.rejects),
            )
        ],
        metrics,
        maintain=lambda: maintain_lake(lake, settings, clock, metrics),
        maintain_interval_secs=settings.cold.compaction_interval_secs,
        stall_secs=settings.process.stall_secs,
    )


def maintain_lake(
    lake: ColdStore, settings: Settings, clock: Clock, metrics: Metrics | None = None
) -> None:
    """Compact closed days, apply retention, delete files removed long enough ago."""
    from convtrack.store.cold.maintain import compact, expire, purge_removed, utc_date

    now = clock.now_us()
    for table in ("events", "rejects"):
        compact(lake, table, closed_before=utc_date(now), now_us=now, metrics=metrics)
        if settings.cold.retention_days:
            expire(lake, table, keep_from=utc_date(now, settings.cold.retention_days), now_us=now)
        purge_removed(lake, table, now_us=now, grace_secs=settings.cold.removed_grace_secs)


def build_delivery_runners(
    settings: Settings,
    backends: Backends,
    metrics: Metrics,
    clock: Clock,
    environ: Mapping[str, str],
    sleep: Callable[[float], None] | None,
) -> list[DeliveryRunner]:
    from convtrack.runtime.deliveries import build_deliveries

    return build_deliveries(
        settings,
        processed=backends.processed,
        deadletters=backends.deadletters,
        clock=clock,
        metrics=metrics,
        environ=environ,
        sleep=sleep,
        quarantine=backends.quarantine,
    )
