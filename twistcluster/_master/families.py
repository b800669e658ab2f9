# -*- test-case-name: tests.test_metrics -*-
"""
Putting the metric families of several processes into one exposition: each
family from a worker (or the master) gets a C{worker} label with where it
came from, and families of one name merge into one.

Prometheus rejects an exposition with two families of one name, or with a
sample name that two families would both write (a counter C{x} writes
C{x_total}, a histogram C{x} writes C{x_bucket}, ...): a family that does
not fit (another type under the same name, names that clash, or the name of
one of the cluster's own families) is left out for the process it came
from, and counted.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from prometheus_client.metrics_core import Metric

#: The names a family of each type writes, besides its own.
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "gaugehistogram": ("_bucket", "_gcount", "_gsum"),
    "summary": ("_count", "_sum", "_created"),
    "info": ("_info",),
}


def namesOf(name: str, kind: str) -> set[str]:
    """
    Every name a family of C{name} and C{kind} may write, its own included.
    """
    return {name, *(name + suffix for suffix in _SUFFIXES.get(kind, ()))}


def _relabelled(labels: dict[str, str], worker: str) -> dict[str, str]:
    labels = dict(labels)
    if "worker" in labels:
        # As Prometheus does with a target's own label of a name it sets.
        labels["exported_worker"] = labels.pop("worker")
    labels["worker"] = worker
    return labels


class FamilyMerger:
    """
    Builds one set of families from several processes' families.

    @ivar conflicts: Families left out in this merge, by the C{worker}
        label of the process they came from.
    """

    def __init__(self, reserved: Iterable[str] = ()) -> None:
        """
        @param reserved: Names no family may write (the cluster's own).
        """
        self._families: dict[str, Metric] = {}
        self._written: dict[str, str] = {name: "" for name in reserved}
        self.conflicts: Counter[str] = Counter()

    def _accept(self, family: Metric) -> None:
        self._families[family.name] = family
        for written in namesOf(family.name, family.type):
            self._written[written] = family.name

    def _fits(self, name: str, kind: str) -> Metric | None | bool:
        """
        @return: The family of that name to add to (the first one's help
            stays), L{None} for a new one, or C{False} if it conflicts.
        """
        existing = self._families.get(name)
        if existing is not None:
            return existing if existing.type == kind else False
        if any(self._written.get(written, name) != name for written in namesOf(name, kind)):
            # Another family writes one of its names, or a cluster family does.
            return False
        return None

    def add(self, families: Sequence[Any], worker: str) -> None:
        """
        Add the families of one process, each as C{[name, type, help, unit,
        samples]} (L{twistcluster._worker.metrics.familiesOf}) or as a
        C{prometheus_client} metric, under C{worker="worker"}.
        """
        for family in families:
            if isinstance(family, Metric):
                name, kind, help, unit = family.name, family.type, family.documentation, family.unit
                samples = [(s.name, s.labels, s.value, s.timestamp) for s in family.samples]
            else:
                name, kind, help, unit, samples = family
            target = self._fits(name, kind)
            if target is False:
                self.conflicts[worker] += 1
                continue
            if target is None:
                try:
                    target = Metric(name, help, kind, unit)
                except ValueError:
                    self.conflicts[worker] += 1
                    continue
                self._accept(target)
            assert isinstance(target, Metric)
            for sampleName, labels, value, timestamp in samples:
                target.add_sample(sampleName, _relabelled(labels, worker), value, timestamp)

    def families(self) -> list[Metric]:
        return list(self._families.values())


class Exposed:
    """
    Families ready for C{prometheus_client}'s encoders, which take any
    object with C{collect()}.
    """

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> list[Metric]:
        return self._families
