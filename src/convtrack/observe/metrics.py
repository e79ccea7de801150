"""Every metric convtrack exports, declared once, on a registry built per app."""

from __future__ import annotations

from typing import Any, NamedTuple

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.exposition import generate_latest

from convtrack.observe.histogram import BatchHistogram

LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip


class RouteCounters(NamedTuple):
    received: Counter
    accepted: Counter


class Metrics:
    def __init__(self) -> None:
        disable_created_metrics()  # type: ignore[no-untyped-call]  # the *_created series double the output for no use here
        self.registry = CollectorRegistry(auto_describe=True)
        self._request_children: dict[tuple[str, int], Any] = {}
        self._route_counters: dict[str, RouteCounters] = {}
        r = self.registry
        self.http_requests = Counter(
            "convtrack_http_requests", "HTTP requests by route and status",
            ["route", "status"], registry=r,
        )  # fmt: skip
        self.events_received = Counter(
            "convtrack_events_received", "Events read from request bodies", ["route"], registry=r
        )
        self.events_accepted = Counter(
            "convtrack_events_accepted", "Events made durable in the log and answered accepted",
            ["route"], registry=r,
        )  # fmt: skip
        self.events_rejected = Counter(
            "convtrack_events_rejected", "Events rejected, by code (one event may have several)",
            ["code"], registry=r,
        )  # fmt: skip
        self.events_unavailable = Counter(
            "convtrack_events_unavailable", "Events answered 503: the log could not take them",
            registry=r,
        )  # fmt: skip
        self.rejects_dropped = Counter(
            "convtrack_rejects_dropped", "Stored rejects dropped by the size cap (oldest first)",
            registry=r,
        )  # fmt: skip
        self.rejects_unstored = Counter(
            "convtrack_rejects_unstored", "Rejects that could not be stored (store overloaded)",
            registry=r,
        )  # fmt: skip
        self.log_append_seconds = Histogram(
            "convtrack_log_append_seconds", "Time from append call to durable, per request",
            buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.log_commit_seconds = Histogram(
            "convtrack_log_commit_seconds", "Duration of one group commit (insert + fsync)",
            buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.log_commit_events = Histogram(
            "convtrack_log_commit_events", "Events per group commit",
            buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000),
            registry=r,
        )  # fmt: skip
        self.log_end_offset = Gauge(
            "convtrack_log_end_offset", "Next offset the log will assign", registry=r
        )
        self.log_pending_events = Gauge(
            "convtrack_log_pending_events", "Events waiting for a group commit", registry=r
        )
        self.errors = Counter(
            "convtrack_errors", "Unexpected errors by stage and kind", ["stage", "kind"], registry=r
        )
        self.processor_events = Counter(
            "convtrack_processor_events", "Events the processor committed, by outcome",
            ["outcome"], registry=r,
        )  # fmt: skip
        self.processor_dropped = Counter(
            "convtrack_processor_dropped", "Log entries the processor could not use, by reason",
            ["reason"], registry=r,
        )  # fmt: skip
        self.enrichment_errors = Counter(
            "convtrack_enrichment_errors", "Enrichers that failed (the field is left unknown)",
            ["enricher"], registry=r,
        )  # fmt: skip
        self.stage_latency = BatchHistogram(
            "convtrack_stage_latency_seconds",
            "Per-stage latency: log (received to logged), queue (logged to processed),"
            " process (processed to counted), end_to_end (received to counted)",
            "stage", LATENCY_BUCKETS,
        )  # fmt: skip
        r.register(self.stage_latency)
        self.latency_anomalies = Counter(
            "convtrack_latency_anomalies", "Events counted more than 5 s after they were received",
            registry=r,
        )  # fmt: skip
        self.value_overflows = Counter(
            "convtrack_value_overflows",
            "Campaign day totals held at the 64-bit bound instead of overflowing (per apply)",
            registry=r,
        )
        self.processor_lag_events = Gauge(
            "convtrack_processor_lag_events", "Log entries the processor has not read", registry=r
        )
        self.processor_lag_seconds = Gauge(
            "convtrack_processor_lag_seconds", "Age of the oldest unread log entry", registry=r
        )
        self.cold_rows_written = Counter(
            "convtrack_cold_rows_written", "Rows flushed to the lake, by table", ["table"],
            registry=r,
        )  # fmt: skip
        self.cold_flush_seconds = Histogram(
            "convtrack_cold_flush_seconds", "Duration of one flush to the lake, by table",
            ["table"], buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.quarantined = Counter(
            "convtrack_quarantined_events",
            "Events a stage failed on for good and kept in the quarantine, by stage",
            ["stage"], registry=r,
        )  # fmt: skip
        self.quarantine_replayed = Counter(
            "convtrack_quarantine_replayed",
            "Quarantined events re-submitted by a replay, by stage", ["stage"], registry=r,
        )  # fmt: skip
        self.stage_stalled = Gauge(
            "convtrack_stage_stalled",
            "1 while a stage has work waiting and has made no progress for process.stall_secs",
            ["stage"], registry=r,
        )  # fmt: skip
        self.dedup_remembered = Gauge(
            "convtrack_dedup_remembered", "Event ids and tokens remembered for deduplication",
            registry=r,
        )  # fmt: skip

        self.child_restarts = Counter(
            "convtrack_child_restarts",
            "Child processes of serve started again after they exited, by their roles",
            ["roles"], registry=r,
        )  # fmt: skip

        self.deliver = DeliveryMetrics(r)

    def route_counters(self, route: str) -> RouteCounters:
        """The ingest counters of one route, labelled once (hot path)."""
        counters = self._route_counters.get(route)
        if counters is None:
            counters = self._route_counters[route] = RouteCounters(
                self.events_received.labels(route), self.events_accepted.labels(route)
            )
        return counters

    def count_request(self, route: str, status: int) -> None:
        """``http_requests{route,status}`` + 1, with the labelled child cached (hot path)."""
        child = self._request_children.get((route, status))
        if child is None:
            child = self._request_children[(route, status)] = self.http_requests.labels(
                route, str(status)
            )
        child.inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def on_log_commit(self, events: int, secs: float) -> None:
        self.log_commit_seconds.observe(secs)
        self.log_commit_events.observe(events)


# Delivery waits span retries and pauses: seconds to an hour.
DELIVERY_BUCKETS = (
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
)  # fmt: skip


class DeliveryMetrics:
    """The delivery runners' series, every one labelled by destination."""

    def __init__(self, r: CollectorRegistry) -> None:
        d = ["destination"]
        self.delivered = Counter(
            "convtrack_deliver_delivered", "Events the platform accepted", d, registry=r
        )
        self.skipped = Counter(
            "convtrack_deliver_skipped", "Events not sent, by reason (consent, a platform window…)",
            [*d, "reason"], registry=r,
        )  # fmt: skip
        self.dead_lettered = Counter(
            "convtrack_deliver_dead_lettered", "Events that became dead letters", d, registry=r
        )
        self.attempts = Counter(
            "convtrack_deliver_attempts", "Requests sent (or refused before sending), by outcome",
            [*d, "outcome"], registry=r,
        )  # fmt: skip
        self.request_seconds = Histogram(
            "convtrack_deliver_request_seconds", "Duration of one request to the platform",
            d, buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.acceptance_seconds = Histogram(
            "convtrack_deliver_acceptance_seconds",
            "Time from the event's receipt to its acceptance by the platform",
            d, buckets=DELIVERY_BUCKETS, registry=r,
        )  # fmt: skip
        self.dead_letters = Gauge(
            "convtrack_deliver_dead_letters", "Dead letters held", d, registry=r
        )
        self.dead_letters_dropped = Counter(
            "convtrack_deliver_dead_letters_dropped",
            "Dead letters dropped by deadletters.max_per_destination (oldest first)",
            d, registry=r,
        )  # fmt: skip
        self.dead_letters_alert = Gauge(
            "convtrack_deliver_dead_letters_alert",
            "1 while a destination holds more than deadletters.alert_threshold dead letters",
            d, registry=r,
        )  # fmt: skip
        self.paused = Gauge(
            "convtrack_deliver_paused", "1 while a setup error pauses the destination", d,
            registry=r,
        )  # fmt: skip
        self.circuit_open = Gauge(
            "convtrack_deliver_circuit_open", "1 while the circuit breaker is open or half-open",
            d, registry=r,
        )  # fmt: skip
        self.lag_events = Gauge(
            "convtrack_deliver_lag_events", "Processed events not yet committed by the destination",
            d, registry=r,
        )  # fmt: skip
        self.lag_seconds = Gauge(
            "convtrack_deliver_lag_seconds",
            "Age of the oldest event the destination has not committed", d, registry=r,
        )  # fmt: skip

    def set_alert(self, kind: str, destination: str, value: float) -> None:
        """The gauge of one alert kind (see deliver.alerts)."""
        gauge = {"paused": self.paused, "circuit_open": self.circuit_open,
                 "dead_letters": self.dead_letters_alert}.get(kind)  # fmt: skip
        if gauge is not None:
            gauge.labels(destination).set(value)
