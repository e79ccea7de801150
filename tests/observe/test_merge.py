"""One /metrics answer from several processes' texts (observe/merge.py)."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from convtrack.observe.merge import merge_expositions
from convtrack.observe.metrics import Metrics


def values(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text.decode())
        for sample in family.samples
    }


def test_one_text_comes_back_as_it_was() -> None:
    metrics = Metrics()
    metrics.count_request("/v1/track", 202)
    metrics.log_commit_seconds.observe(0.004)
    metrics.stage_latency.observe_many("queue", [0.001, 0.3])
    assert merge_expositions([metrics.render()]) == metrics.render()


def test_equal_series_are_summed_and_the_others_kept() -> None:
    collector, processor = Metrics(), Metrics()
    for _ in range(3):
        collector.count_request("/v1/track", 202)
    processor.count_request("/readyz", 200)
    collector.log_commit_seconds.observe(0.004)
    processor.log_commit_seconds.observe(0.2)
    processor.processor_events.labels("counted").inc(7)
    processor.processor_lag_events.set(42)  # a gauge only its owner sets
    processor.stage_latency.observe_many("end_to_end", [0.01, 0.02, 3.0])

    merged = values(merge_expositions([collector.render(), processor.render()]))
    apart = [values(collector.render()), values(processor.render())]
    keys = set(apart[0]) | set(apart[1])
    assert set(merged) == keys
    for key in keys:
        assert merged[key] == sum(part.get(key, 0.0) for part in apart), key
    assert merged[("convtrack_processor_lag_events", ())] == 42
    count = ("convtrack_log_commit_seconds_count", ())
    assert merged[count] == 2
    bucket = ("convtrack_log_commit_seconds_bucket", (("le", "0.005"),))
    assert merged[bucket] == 1


def test_each_family_is_declared_once() -> None:
    text = merge_expositions([Metrics().render(), Metrics().render(), Metrics().render()])
    types = [line for line in text.decode().splitlines() if line.startswith("# TYPE ")]
    assert len(types) == len(set(types)) > 20
