# -*- test-case-name: tests.test_metrics -*-
"""
A scrape of the whole cluster: the cluster's own metrics (C{twistcluster_*},
read from the master's state when asked), the master's own registry under
C{worker="master"}, and every ready worker's own registry under
C{worker="SLOT"}, collected over the control channel at scrape time
(L{CollectMetrics}) and merged (L{FamilyMerger}).

A worker that does not answer within the bound is left out of that scrape
and counted (C{twistcluster_worker_scrape_failures_total}): a stopped or
blocked worker delays a scrape by the bound at most.

Nothing here runs until a scrape: the hand-off path keeps plain integer
counts, and this reads them.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from .._common.sockets import describeAddress
from .._common.statistics import MAX_METRICS_BYTES, CollectMetrics, WorkerStatistics
from .families import FamilyMerger, namesOf
from .lifecycle import LIVING_STATES
from .processes import ProcessSampler
from .pull import askEach
from .status import StatusSource
from .supervised import RestartCause

#: Seconds each worker has to answer a scrape.
METRICS_TIMEOUT = 1.0

#: The cluster's own families: name (as C{prometheus_client} names a
#: counter, without C{_total}), type, help, labels.  The README's table.
CLUSTER_FAMILIES: Sequence[tuple[str, str, str, Sequence[str]]] = (
    ("twistcluster_workers", "gauge", "Workers, by state", ("state",)),
    ("twistcluster_workers_wanted", "gauge", "Workers the master keeps serving (--workers, as scaled)", ()),
    ("twistcluster_ready", "gauge", "1 while /healthz answers 200", ()),
    ("twistcluster_generation", "gauge", "Rolling restarts asked for so far", ()),
    ("twistcluster_restarts", "counter", "Workers replaced, by cause", ("cause",)),
    ("twistcluster_connections_accepted", "counter", "Connections the master accepted", ("listener",)),
    ("twistcluster_handoff_queue_depth", "gauge", "Accepted connections waiting for a worker", ("listener",)),
    ("twistcluster_accept_queue_depth", "gauge", "Connections in the kernel's accept queue", ("listener",)),
    (
        "twistcluster_backpressure_pauses",
        "counter",
        "Pauses of a full hand-off queue",
        ("listener",),
    ),
    (
        "twistcluster_accept_emfile_errors",
        "counter",
        "accept() out of descriptors",
        ("listener",),
    ),
    ("twistcluster_worker_connections_handed_off", "counter", "Hand-offs the worker accepted", ("worker",)),
    ("twistcluster_worker_connections_refused", "counter", "Hand-offs the worker refused", ("worker",)),
    ("twistcluster_worker_connections_accepted", "counter", "Connections the worker took", ("worker",)),
    ("twistcluster_worker_connections_open", "gauge", "Connections the worker serves now", ("worker",)),
    ("twistcluster_worker_heartbeat_rtt_seconds", "gauge", "The last heartbeat's round trip", ("worker",)),
    ("twistcluster_worker_info", "gauge", "The worker in each slot", ("worker", "id", "pid", "generation")),
    ("twistcluster_process_resident_memory_bytes", "gauge", "Resident memory", ("worker",)),
    ("twistcluster_process_cpu_seconds", "counter", "User and system CPU time", ("worker",)),
    (
        "twistcluster_worker_scrape_failures",
        "counter",
        "Scrapes without the worker",
        ("worker",),
    ),
    (
        "twistcluster_metric_family_conflicts",
        "counter",
        "Families left out (type, name)",
        ("worker",),
    ),
)

RESERVED = frozenset().union(*(namesOf(name, kind) for name, kind, _, _ in CLUSTER_FAMILIES))


def slotLabel(worker: Any) -> str:
    """
    A worker's C{worker} label: its slot (kept by its replacements, so a
    slot's series go on), or C{idN} for a worker without one.
    """
    return str(worker.slot) if worker.slot is not None else f"id{worker.id}"


class ClusterScrape:
    """
    Scrapes one master's cluster.

    @ivar scrapeFailures: Scrapes that left a worker's metrics out, by label.
    @ivar conflicts: Families left out of scrapes, by label.
    """

    _log = Logger()

    def __init__(
        self,
        reactor: IReactorTime,
        master: StatusSource,
        registry: Any = None,
        sampler: ProcessSampler | None = None,
        timeout: float = METRICS_TIMEOUT,
        maxBytes: int = MAX_METRICS_BYTES,
    ) -> None:
        if registry is None:
            from prometheus_client import REGISTRY as registry
        self._reactor = reactor
        self._master = master
        self._registry = registry
        self._sampler = sampler if sampler is not None else ProcessSampler()
        self.timeout = timeout
        self._maxBytes = maxBytes
        self.scrapeFailures: Counter[str] = Counter()
        self.conflicts: Counter[str] = Counter()

    def bySlot(self) -> dict[str, Any]:
        """
        The worker each slot's series come from: the newest in it (during a
        rolling restart the new one, ready, beside the old one, leaving).
        """
        chosen: dict[str, Any] = {}
        for worker in sorted(self._master.supervisor.workers.values(), key=lambda w: w.id):
            chosen[slotLabel(worker)] = worker
        return chosen

    def scrape(self) -> Deferred[list[Metric]]:
        """
        @return: Fires with every family of the cluster, within the bound.
        """
        workers = self.bySlot()
        connected = [w for w in workers.values() if w.isOnline()]
        ready = [w for w in workers.values() if w.isReady()]
        statistics = askEach(self._reactor, connected, WorkerStatistics, self.timeout)
        collected = askEach(self._reactor, ready, CollectMetrics, self.timeout, maxBytes=self._maxBytes)
        both: Deferred[Any] = gatherResults([statistics, collected])
        return both.addCallback(lambda answers: self._families(workers, dict(answers[0]), answers[1]))

    def _families(
        self, workers: Mapping[str, Any], statistics: Mapping[Any, Any], collected: Sequence[tuple[Any, Any]]
    ) -> list[Metric]:
        merger = FamilyMerger(RESERVED)
        merger.add(list(self._registry.collect()), "master")
        for worker, answer in collected:
            label = slotLabel(worker)
            families = self._decoded(worker, answer)
            if families is None:
                self.scrapeFailures[label] += 1
            else:
                merger.add(families, label)
        self.conflicts.update(merger.conflicts)
        return [*self._clusterFamilies(workers, statistics), *merger.families()]

    def _decoded(self, worker: Any, answer: Any) -> list[Any] | None:
        why: Any = answer
        if not isinstance(answer, Failure):
            try:
                return list(json.loads(answer["families"]))
            except ValueError as e:
                why = e
        self._log.info(
            "worker {workerId} left out of a scrape: {why}",
            workerId=worker.id,
            why=why.getErrorMessage() if isinstance(why, Failure) else why,
        )
        return None

    def _clusterFamilies(self, workers: Mapping[str, Any], statistics: Mapping[Any, Any]) -> list[Metric]:
        made = {
            name: (CounterMetricFamily if kind == "counter" else GaugeMetricFamily)(name, help, labels=labels)
            for name, kind, help, labels in CLUSTER_FAMILIES
        }

        def add(name: str, labels: Sequence[str], value: float | None) -> None:
            if value is not None:
                made[name].add_metric(list(labels), value)

        self._masterPart(add)
        self._listenersPart(add)
        for label, worker in sorted(workers.items()):
            self._workerPart(add, label, worker, statistics.get(worker))
        for label, count in sorted(self.scrapeFailures.items()):
            add("twistcluster_worker_scrape_failures", [label], count)
        for label, count in sorted(self.conflicts.items()):
            add("twistcluster_metric_family_conflicts", [label], count)
        return list(made.values())

    def _masterPart(self, add: Any) -> None:
        master = self._master
        supervisor = master.supervisor
        states = Counter(w.state for w in supervisor.workers.values())
        for state in LIVING_STATES:
            add("twistcluster_workers", [state], states[state])
        add("twistcluster_workers_wanted", [], supervisor.size)
        add("twistcluster_ready", [], int(isReady(master)))
        add("twistcluster_generation", [], supervisor.generation)
        for cause in RestartCause:
            add("twistcluster_restarts", [str(cause)], supervisor.restarts[cause])
        own = self._sampler.sample(os.getpid())
        if own is not None:
            add("twistcluster_process_resident_memory_bytes", ["master"], own.rssBytes)
            add("twistcluster_process_cpu_seconds", ["master"], own.cpuSeconds)

    def _listenersPart(self, add: Any) -> None:
        for handle in self._master.handles:
            listener = [describeAddress(handle.spec, handle.sockname)]
            counts = handle.statistics()
            add("twistcluster_connections_accepted", listener, counts.get("accepted"))
            add("twistcluster_handoff_queue_depth", listener, counts.get("handOffQueue"))
            add("twistcluster_accept_queue_depth", listener, counts.get("acceptQueue"))
            add("twistcluster_backpressure_pauses", listener, counts.get("backpressurePauses"))
            add("twistcluster_accept_emfile_errors", listener, counts.get("emfileErrors"))

    def _workerPart(self, add: Any, label: str, worker: Any, answer: Any) -> None:
        add("twistcluster_worker_info", [label, str(worker.id), str(worker.pid), str(worker.generation)], 1)
        add("twistcluster_worker_connections_handed_off", [label], worker.connectionsTaken)
        add("twistcluster_worker_connections_refused", [label], worker.connectionsRefused)
        if isinstance(answer, dict):
            add("twistcluster_worker_connections_accepted", [label], answer["connectionsTotal"])
            add("twistcluster_worker_connections_open", [label], answer["connectionsOpen"])
        add("twistcluster_worker_heartbeat_rtt_seconds", [label], self._master.roundTrips.get(worker.id))
        sample = self._sampler.sample(worker.pid)
        if sample is not None:
            add("twistcluster_process_resident_memory_bytes", [label], sample.rssBytes)
            add("twistcluster_process_cpu_seconds", [label], sample.cpuSeconds)


def isReady(master: StatusSource) -> bool:
    """
    Readiness (C{/healthz}): a worker ready, and the master neither
    draining nor stopping.
    """
    return not master.isStopping() and master.supervisor.readyCount >= 1
