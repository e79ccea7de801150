"""The processing steps: check, enrich, route, then dedupe-and-commit."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import msgspec

from convtrack import failpoints
from convtrack.clock import Clock
from convtrack.errors import ConvtrackError, LogError
from convtrack.log.base import EventLog, LogConsumer
from convtrack.model.event import SESSION_EVENT_NAMES, decode_envelope
from convtrack.model.tokens import read_claims
from convtrack.observe.metrics import Metrics
from convtrack.process.base import (
    CONVERSION,
    EXCLUDED_BOT,
    GROUP,
    NOT_A_CONVERSION,
    Batch,
    Checked,
    Enriched,
    Item,
    Step,
)
from convtrack.process.enrich import Enricher, utc_date
from convtrack.process.outputs import decision_of, effect, processed_record
from convtrack.process.recorded import restore
from convtrack.store.hot.base import HotStore

log = logging.getLogger("convtrack.process")

LOG_COMMIT_INTERVAL_SECS = 1.0


class CheckStep(Step):
    """What the collector could not check: the entry decodes, and its token can be read."""

    stage = "check"

    def __init__(self, clock: Clock, metrics: Metrics, next_step: Step | None = None) -> None:
        super().__init__(next_step)
        self._clock = clock
        self._metrics = metrics

    def process(self, batch: Batch) -> None:
        now = self._clock.now_us()
        for item in batch.items:
            try:
                envelope = decode_envelope(item.entry.payload)
            except (msgspec.DecodeError, msgspec.ValidationError):
                self._drop(item, "undecodable")
                continue
            token = envelope.conversion_token
            claims = None if token is None else read_claims(token)
            item.checked = Checked(envelope, now, claims)
            if token is not None and claims is None:
                self._drop(item, "token_unreadable")

    def _drop(self, item: Item, reason: str) -> None:
        item.drop_reason = reason
        self._metrics.processor_dropped.labels(reason).inc()


class EnrichStep(Step):
    """Runs each registered enricher; a failing enricher leaves its field unknown."""

    stage = "enrich"

    def __init__(
        self, enrichers: Sequence[Enricher], metrics: Metrics, next_step: Step | None = None
    ) -> None:
        super().__init__(next_step)
        self._enrichers = tuple(enrichers)
        self._metrics = metrics

    def process(self, batch: Batch) -> None:
        for item in self.live_items(batch):
            assert item.checked is not None
            envelope = item.checked.envelope
            attributed = item.attributed
            enriched = Enriched()
            if attributed is not None and attributed.campaign_id is not None:
                enriched.campaign_id = attributed.campaign_id  # unless the event names one
            for enricher in self._enrichers:
                try:
                    enricher(envelope, enriched)
                except Exception:
                    self._metrics.enrichment_errors.labels(enricher.__name__).inc()
            if not enriched.event_date:
                enriched.event_date = utc_date(envelope.received_at_us)
            item.enriched = enriched


class RouteStep(Step):
    """Decides what each event is for: counted as a conversion, or a session event.

    Bots are stored but not counted (nor forwarded) unless ``count_bots``.
    """

    stage = "route"

    def __init__(
        self,
        conversion_names: Sequence[str],
        count_bots: bool = False,
        next_step: Step | None = None,
    ) -> None:
        super().__init__(next_step)
        self._names = frozenset(conversion_names)
        self._count_bots = count_bots

    def is_conversion(self, event_name: str) -> bool:
        if self._names:
            return event_name in self._names
        return event_name not in SESSION_EVENT_NAMES

    def process(self, batch: Batch) -> None:
        for item in self.live_items(batch):
            assert item.checked is not None and item.enriched is not None
            named = self.is_conversion(item.checked.envelope.event_name)
            wanted = self._count_bots or not item.enriched.is_bot
            # What /v1/stats/conversions reports as excluded (the name decides first).
            item.routed = (
                CONVERSION if wanted and named else EXCLUDED_BOT if named else NOT_A_CONVERSION
            )


class DedupeCommitStep(Step):
    """Dedupe and count, publish the new events, then commit.

    0. Every event's processed record is built first (stage ``publish``): an
       event that cannot be published fails here, before anything is counted,
       so quarantining it leaves no count behind.
    1. The hot store dedupes and counts with the positions, in one transaction
       (stage ``hot_apply``).
    2. The events that were new go to the processed log (for the cold store
       and the destinations), in log order. Past step 1 a failure is the
       log's (``LogError``): the batch is retried whole, never bisected.
    3. The event log's own consumer group moves (lag and retention).
    A crash after 1 replays from the processed log's tail (see the runner):
    the hot store answers a replay with its first verdicts and counts nothing
    twice, so step 2 is completed exactly once. Each event goes to the
    processed partition of its source partition (same key and partitioner,
    same partition count), which is what lets the tail of a processed
    partition say how far its source partition was published.
    """

    stage = "hot_apply"

    def __init__(
        self,
        hot: HotStore,
        consumer: LogConsumer,
        processed: EventLog,
        clock: Clock,
        metrics: Metrics,
        next_step: Step | None = None,
    ) -> None:
        super().__init__(next_step)
        self._hot = hot
        self._consumer = consumer
        self._processed = processed
        self._clock = clock
        self._metrics = metrics
        self._last_log_commit = clock.monotonic() - LOG_COMMIT_INTERVAL_SECS  # first: now

    def process(self, batch: Batch) -> None:
        live = self.live_items(batch)
        now = self._clock.now_us()
        stage = "publish"
        try:
            decisions = [decision_of(item) for item in live]
            records = [
                processed_record(item, d, now) for item, d in zip(live, decisions, strict=True)
            ]
            _inject(stage, live)
            stage = "hot_apply"
            effects = [effect(item, d) for item, d in zip(live, decisions, strict=True)]
            _inject(stage, live)
            result = self._hot.apply(
                GROUP, effects, batch.positions, now, batch.sessions, batch.touches
            )
        except Exception:
            batch.failed_stage = stage
            raise
        try:
            for index, blob in result.recorded.items():  # a replay publishes what was counted
                first_run = restore(blob)
                if first_run is not None:
                    records[index] = processed_record(live[index], first_run, now)
            new = [record for record, fresh in zip(records, result.counted, strict=True) if fresh]
            self._processed.append_blocking(new)
        except ConvtrackError:
            raise
        except Exception as exc:  # counted already: only publishing again completes it
            raise LogError(f"publishing to the processed log failed: {exc}") from exc
        # The log's own group only shows how far the processor got (the hot store's
        # positions are what it resumes from); committing it every batch would take the
        # event log's write lock and an fsync away from ingest, so once a second is enough.
        if self._clock.monotonic() - self._last_log_commit >= LOG_COMMIT_INTERVAL_SECS:
            self._commit_log_positions(batch.positions)
        self._observe(live, result.counted, now)
        self._metrics.latency_anomalies.inc(result.latency_anomalies)
        self._metrics.value_overflows.inc(result.value_overflows)

    def inject_faults(self, batch: Batch) -> None:
        return None  # checked in ``process``, before the hot store counts anything

    def _commit_log_positions(self, positions: dict[int, int]) -> None:
        # Only a hint (for lag, and where a partition's next owner starts reading before
        # it moves to its resume point): a failure must not replay a published batch.
        # Kafka refuses it for a partition that has just moved to another process.
        try:
            self._consumer.commit(positions)
        except ConvtrackError as exc:
            self._metrics.errors.labels("process", "log_commit").inc()
            log.warning("log_commit_failed", extra={"error": str(exc)})
        self._last_log_commit = self._clock.monotonic()

    def _observe(self, items: Sequence[Item], counted: Sequence[bool], now_us: int) -> None:
        m = self._metrics
        n_counted = sum(counted)
        m.processor_events.labels("counted").inc(n_counted)
        m.processor_events.labels("duplicate").inc(len(items) - n_counted)
        checked = [i.checked for i in items if i.checked is not None]
        received = [c.envelope.received_at_us for c in checked]
        logged = [i.entry.logged_at_us for i in items]
        taken = [c.processed_at_us for c in checked]
        stage = m.stage_latency
        log_lag = (max(0, lg - r) / 1e6 for lg, r in zip(logged, received, strict=True))
        stage.observe_many("log", log_lag)
        queue_lag = (max(0, t - lg) / 1e6 for t, lg in zip(taken, logged, strict=True))
        stage.observe_many("queue", queue_lag)
        stage.observe_many("process", (max(0, now_us - t) / 1e6 for t in taken))
        stage.observe_many(
            "end_to_end",
            (max(0, now_us - r) / 1e6 for r, c in zip(received, counted, strict=True) if c),
        )


def _inject(stage: str, items: Sequence[Item]) -> None:
    armed = failpoints.poisoned(stage)
    if armed:
        for item in items:
            failpoints.check(stage, item.checked.envelope.event_id if item.checked else None, armed)
