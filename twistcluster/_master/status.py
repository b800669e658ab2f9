# -*- test-case-name: tests.test_ctl -*-
"""
The status document (C{twistcluster status --json}): the master, its
listeners, one row per worker, and the last lifecycle events.  Its keys are
a contract (README, "The status document").

Built when asked: the master's own counts are read as they stand, and each
worker is asked for its connection counts (L{WorkerStatistics}) within a
short bound, so a stopped or blocked worker shows C{null} counts instead of
holding up the answer.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

from .._common.sockets import describeAddress
from .._common.statistics import WorkerStatistics
from .journal import Journal
from .phase import MasterPhase
from .processes import ProcessSample, ProcessSampler
from .pull import askEach
from .supervised import RestartCause

#: Seconds a worker has to answer for the status before it is left out.
ASK_TIMEOUT = 1.0


def twistclusterVersion() -> str:
    """
    The version of the code this master runs (after an upgrade, the new
    release's, whatever the installed package's metadata says).
    """
    from .._version import __version__

    return __version__


def twistedVersion() -> str:
    import twisted

    return str(twisted.__version__)


class StatusSource(Protocol):
    """
    What the status reads of the master (L{twistcluster._master.service.Master}).
    """

    phase: MasterPhase
    handles: Any
    supervisor: Any

    def isStopping(self) -> bool: ...

    @property
    def policy(self) -> str: ...

    @property
    def roundTrips(self) -> Mapping[int, float]: ...


class ClusterStatus:
    """
    Builds the status document of one master.

    @ivar _timeout: Seconds each worker has to answer.
    """

    def __init__(
        self,
        reactor: IReactorTime,
        master: StatusSource,
        journal: Journal,
        sampler: ProcessSampler | None = None,
        timeout: float = ASK_TIMEOUT,
        extra: Callable[[], dict[str, Any]] = dict,
    ) -> None:
        self._reactor = reactor
        self._master = master
        self._journal = journal
        self._sampler = sampler if sampler is not None else ProcessSampler()
        self._timeout = timeout
        self._extra = extra

    def status(self) -> Deferred[dict[str, Any]]:
        """
        @return: Fires with the status document (within the bound).
        """
        workers = sorted(self._master.supervisor.workers.values(), key=lambda w: w.id)
        connected = [w for w in workers if w.isOnline()]
        asking = askEach(self._reactor, connected, WorkerStatistics, self._timeout)
        return asking.addCallback(lambda answers: self.document(workers, dict(answers)))

    def document(self, workers: Sequence[Any], answers: Mapping[Any, Any]) -> dict[str, Any]:
        """
        The document, from the workers' answers to L{WorkerStatistics}.
        """
        now = self._reactor.seconds()
        rows = [self._worker(w, answers.get(w), now) for w in workers]
        self._sampler.forgetAllBut({os.getpid(), *(w.pid for w in workers if w.pid is not None)})
        return {"master": self._masterPart(now), "workers": rows, "events": self._journal.events()}

    def _masterPart(self, now: float) -> dict[str, Any]:
        master = self._master
        supervisor = master.supervisor
        own = self._sampler.sample(os.getpid())
        return {
            "pid": os.getpid(),
            "version": twistclusterVersion(),
            "twistedVersion": twistedVersion(),
            "pythonVersion": sys.version.split()[0],
            **_processPart(own, now),
            "policy": master.policy,
            "phase": master.phase.value,
            "workers": supervisor.size,
            "ready": supervisor.readyCount,
            "generation": supervisor.generation,
            "restarts": {str(cause): supervisor.restarts[cause] for cause in RestartCause},
            "listeners": [self._listener(h) for h in master.handles],
            **self._extra(),
        }

    def _listener(self, handle: Any) -> dict[str, Any]:
        return {
            "key": handle.key,
            "address": describeAddress(handle.spec, handle.sockname),
            "scheduling": handle.scheduling,
            **handle.statistics(),
        }

    def _worker(self, worker: Any, answer: dict[str, Any] | Failure | None, now: float) -> dict[str, Any]:
        counts = answer if isinstance(answer, dict) else {}
        roundTrip = self._master.roundTrips.get(worker.id)
        return {
            "id": worker.id,
            "slot": worker.slot,
            "pid": worker.pid,
            "generation": worker.generation,
            "state": worker.state,
            **_processPart(self._sampler.sample(worker.pid), now),
            "connectionsOpen": counts.get("connectionsOpen"),
            "connectionsTotal": counts.get("connectionsTotal"),
            "handedOff": worker.connectionsTaken,
            "refused": worker.connectionsRefused,
            "heartbeatRoundTrip": None if roundTrip is None else round(roundTrip, 6),
        }


def _processPart(sample: ProcessSample | None, now: float) -> dict[str, Any]:
    if sample is None:
        return {"startedAt": None, "uptime": None, "rssBytes": None, "cpuPercent": None, "cpuSeconds": None}
    return {
        "startedAt": sample.startedAt,
        "uptime": round(max(0.0, now - sample.startedAt), 3),
        "rssBytes": sample.rssBytes,
        "cpuPercent": sample.cpuPercent,
        "cpuSeconds": round(sample.cpuSeconds, 3),
    }
