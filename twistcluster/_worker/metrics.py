# -*- test-case-name: tests.test_statistics -*-
"""
A worker's own metrics, for the master's scrape: whatever the application
registered on C{prometheus_client}'s default registry, as in a single
process, read when the master asks (L{CollectMetrics}) and sent as plain
metric families.  No multiprocess directory, no files.

C{prometheus_client} is imported on the first scrape, so a worker of a
master without C{--metrics} never loads it (unless its application does).
"""

from __future__ import annotations

import json
from typing import Any

from .._common.statistics import MetricsTooLarge, MetricsUnavailable


def familiesOf(registry: Any) -> list[list[Any]]:
    """
    Every metric family C{registry} collects, as C{[name, type, help, unit,
    samples]}, each sample C{[name, labels, value, timestamp or None]}
    (exemplars and native histograms stay behind).
    """
    families = []
    for metric in registry.collect():
        samples = [
            [s.name, dict(s.labels), s.value, None if s.timestamp is None else float(s.timestamp)]
            for s in metric.samples
            if s.native_histogram is None
        ]
        families.append([metric.name, metric.type, metric.documentation, metric.unit, samples])
    return families


def encodedFamilies(maxBytes: int, registry: Any = None) -> bytes:
    """
    The default registry's families (or C{registry}'s), in JSON.

    @raise MetricsTooLarge: They take more than C{maxBytes} bytes.
    @raise MetricsUnavailable: A collector raised.
    """
    if registry is None:
        from prometheus_client import REGISTRY

        registry = REGISTRY
    try:
        data = json.dumps(familiesOf(registry), separators=(",", ":")).encode("utf-8")
    except Exception as e:
        raise MetricsUnavailable(f"collecting the registry failed: {type(e).__name__}: {e}") from e
    if len(data) > maxBytes:
        raise MetricsTooLarge(f"the registry's families take {len(data)} bytes, over the bound of {maxBytes}")
    return data
