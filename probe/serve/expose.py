"""The Prometheus text format of a probe's samples, written by prometheus_client."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest

from probe.metrics import FAMILIES, Sample


class _Collected:
    """One scrape's samples as the collector prometheus_client's writer reads."""

    def __init__(self, found: Sequence[Sample]) -> None:
        self.found = found

    def collect(self) -> Iterator[Metric]:
        by_name: dict[str, list[Sample]] = {}
        for s in self.found:
            by_name.setdefault(s.name, []).append(s)
        for name, (_, help_) in FAMILIES.items():
            got = by_name.get(name)
            if not got:
                continue
            family = GaugeMetricFamily(name, help_, labels=[k for k, _ in got[0].labels])
            for s in got:
                family.add_metric([v for _, v in s.labels], s.value)
            yield family


def exposition(found: Sequence[Sample]) -> bytes:
    return generate_latest(_Collected(found))
