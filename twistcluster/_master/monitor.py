# -*- test-case-name: tests.test_monitor -*-
"""
Watching live workers: a heartbeat over the control channel (answered by the
worker's reactor, so a blocked event loop fails it), a boot deadline, and a
resident-memory limit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Protocol, TypeVar

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from .._common.protocol import Ping


class Watched(Protocol):
    id: int
    pid: int | None

    def isBooting(self) -> bool: ...

    def isReady(self) -> bool: ...

    def callRemote(self, command: type, **arguments: object) -> Deferred[Any]: ...


_Detail = TypeVar("_Detail")


def residentBytes(pid: int) -> int | None:
    """
    A process's resident memory (VmRSS), or L{None} if it is gone.
    """
    try:
        with open(f"/proc/{pid}/status", "rb") as status:
            for line in status:
                if line.startswith(b"VmRSS:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


class WorkerMonitor:
    """
    Every C{interval} seconds: ping each ready worker and report one whose
    last answer is older than C{workerTimeout}, or whose oldest unanswered
    hand-off of a connection is; report one not ready within
    C{bootTimeout}; report one whose resident memory exceeds C{maxMemory}.

    @ivar _hung: Called once for a worker that fails its heartbeat or its
        boot deadline, with the reason.
    @ivar _tooBig: Called once for a worker over the memory limit, with its
        size.
    @ivar roundTrips: The last heartbeat's round-trip time (seconds), by
        worker id.
    """

    _log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        workers: Callable[[], Iterable[Watched]],
        hung: Callable[[Watched, str], object],
        tooBig: Callable[[Watched, int], object],
        workerTimeout: float,
        bootTimeout: float,
        maxMemory: int | None = None,
        memoryOf: Callable[[int], int | None] = residentBytes,
        unansweredSince: Callable[[Watched], float | None] = lambda worker: None,
    ) -> None:
        self._clock = clock
        self._workers = workers
        self._hung = hung
        self._tooBig = tooBig
        self._workerTimeout = workerTimeout
        self._bootTimeout = bootTimeout
        self._maxMemory = maxMemory
        self._memoryOf = memoryOf
        self._unansweredSince = unansweredSince
        self._firstSeen: dict[int, float] = {}
        self._lastAnswer: dict[int, float] = {}
        #: When the last heartbeat a worker answered was sent.
        self._lastAnsweredPing: dict[int, float] = {}
        self._pinging: set[int] = set()
        self._reported: set[int] = set()
        self.roundTrips: dict[int, float] = {}
        self._loop = LoopingCall(self.check)
        self._loop.clock = clock

    @property
    def interval(self) -> float:
        return max(0.05, min(self._workerTimeout, self._bootTimeout) / 4)

    def start(self) -> None:
        self._loop.start(self.interval, now=False)

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()

    def check(self) -> None:
        now = self._clock.seconds()
        alive = set()
        for worker in list(self._workers()):
            alive.add(worker.id)
            if worker.id in self._reported:
                continue
            self._firstSeen.setdefault(worker.id, now)
            try:
                self._checkOne(worker, now)
            except Exception:
                # One worker's trouble must not stop the watch over the others.
                self._log.failure("checking worker {workerId} failed", workerId=worker.id)
        for gone in set(self._firstSeen) - alive:
            self._forget(gone)

    def _checkOne(self, worker: Watched, now: float) -> None:
        if worker.isBooting():
            self._checkBoot(worker, now)
        elif worker.isReady():
            self._checkHeartbeat(worker, now)
            self._checkHandOffs(worker, now)
            self._checkMemory(worker)

    def _checkBoot(self, worker: Watched, now: float) -> None:
        if now - self._firstSeen[worker.id] > self._bootTimeout:
            self._report(worker, self._hung, f"was not ready after {self._bootTimeout:g}s")

    def _checkHeartbeat(self, worker: Watched, now: float) -> None:
        last = self._lastAnswer.setdefault(worker.id, now)
        if now - last > self._workerTimeout:
            self._report(worker, self._hung, f"no heartbeat answer for {self._workerTimeout:g}s")
            return
        if worker.id not in self._pinging:
            self._pinging.add(worker.id)
            d = worker.callRemote(Ping)
            d.addCallbacks(self._answered, lambda reason: None, callbackArgs=(worker.id, now))
            workerId = worker.id
            d.addBoth(lambda _: self._pinging.discard(workerId))

    def _checkHandOffs(self, worker: Watched, now: float) -> None:
        # A worker that answers its heartbeat but sits on the sockets it was
        # handed is as hung as one that answers nothing: the clients wait.
        # (One that answers nothing since is the heartbeat's to report: a
        # ping sent after the hand-off reaches the worker after it, so its
        # answer says the worker read the hand-off and sat on it.)
        if worker.id in self._reported:
            return
        sentAt = self._unansweredSince(worker)
        if (
            sentAt is not None
            and now - sentAt > self._workerTimeout
            and self._lastAnsweredPing.get(worker.id, float("-inf")) > sentAt
        ):
            self._report(worker, self._hung, f"a hand-off unanswered for {self._workerTimeout:g}s")

    def _answered(self, answer: object, workerId: int, sent: float) -> None:
        self._lastAnswer[workerId] = now = self._clock.seconds()
        self._lastAnsweredPing[workerId] = sent
        if workerId in self._firstSeen:
            self.roundTrips[workerId] = now - sent

    def _checkMemory(self, worker: Watched) -> None:
        if self._maxMemory is None or worker.pid is None:
            return
        size = self._memoryOf(worker.pid)
        if size is not None and size > self._maxMemory:
            self._report(worker, self._tooBig, size)

    def _report(self, worker: Watched, to: Callable[[Watched, _Detail], object], detail: _Detail) -> None:
        self._reported.add(worker.id)
        to(worker, detail)

    def _forget(self, workerId: int) -> None:
        for table in (self._firstSeen, self._lastAnswer, self._lastAnsweredPing, self.roundTrips):
            table.pop(workerId, None)
        self._pinging.discard(workerId)
        self._reported.discard(workerId)
