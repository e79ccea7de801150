"""One /metrics answer for a server whose roles run in several processes.

On the embedded default the collector serves /metrics and the processor and the
lake writer run in child processes of their own (runtime/children.py). Each
process declares every family (``Metrics``) and sets only the series of its own
roles, so summing equal series gives the whole server: counters and histogram
buckets add up, and a gauge is set by the one process whose role owns it (the
others export it at 0). This is prometheus_client's multiprocess rule ``sum``,
applied to the text each process renders.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.samples import Sample

SeriesKey = tuple[str, tuple[tuple[str, str], ...]]


def merge_expositions(texts: Sequence[bytes]) -> bytes:
    """The Prometheus text of all ``texts`` together: equal series summed, families in the
    order they first appear."""
    families: dict[str, Metric] = {}
    values: dict[str, dict[SeriesKey, Sample]] = {}
    for text in texts:
        for family in text_string_to_metric_families(text.decode()):
            if family.name not in families:
                families[family.name] = family
                values[family.name] = {}
            series = values[family.name]
            for sample in family.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                seen = series.get(key)
                series[key] = (
                    sample if seen is None else seen._replace(value=seen.value + sample.value)
                )
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Merged(families, values))
    return generate_latest(registry)


class _Merged(Collector):
    def __init__(self, families: dict[str, Metric], values: dict[str, dict[SeriesKey, Sample]]):
        self._families = families
        self._values = values

    def collect(self) -> Iterator[Metric]:
        for name, family in self._families.items():
            merged = Metric(family.name, family.documentation, family.type, family.unit)
            merged.samples = list(self._values[name].values())
            yield merged
