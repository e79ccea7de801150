"""A histogram that takes a whole batch of observations at once.

prometheus_client's Histogram takes a lock and walks its buckets per
observation; the processor observes several latencies for every event, so
it keeps its own bucket counts here (one lock per batch) and exports them
through a collector in the same Prometheus text format.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Sequence

from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector


class BatchHistogram(Collector):
    def __init__(self, name: str, documentation: str, label: str, buckets: Sequence[float]) -> None:
        self._name = name
        self._documentation = documentation
        self._label = label
        self._bounds = tuple(buckets)
        self._series: dict[str, tuple[list[int], list[float]]] = {}
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return self._name

    @property
    def documentation(self) -> str:
        return self._documentation

    @property
    def labels(self) -> tuple[str, ...]:
        return (self._label,)

    def observe_many(self, label_value: str, values: Iterable[float]) -> None:
        bounds = self._bounds
        local = [0] * (len(bounds) + 1)
        total = 0.0
        for value in values:
            local[bisect_left(bounds, value)] += 1
            total += value
        with self._lock:
            counts, sums = self._series.setdefault(label_value, ([0] * (len(bounds) + 1), [0.0]))
            for i, n in enumerate(local):
                counts[i] += n
            sums[0] += total

    def collect(self) -> Iterator[HistogramMetricFamily]:
        family = HistogramMetricFamily(self._name, self._documentation, labels=[self._label])
        with self._lock:
            series = {k: (list(c), s[0]) for k, (c, s) in self._series.items()}
        for label_value, (counts, total) in sorted(series.items()):
            cumulative = 0
            buckets: list[tuple[str, float]] = []
            for bound, n in zip((*map(str, self._bounds), "+Inf"), counts, strict=True):
                cumulative += n
                buckets.append((bound, cumulative))
            family.add_metric([label_value], buckets, total)
        yield family
