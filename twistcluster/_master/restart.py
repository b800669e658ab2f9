# -*- test-case-name: tests.test_supervisor -*-
"""
A rolling restart: each worker of an older generation is replaced in turn by
a new one, which must be ready (listening) before the old one is taken out
of rotation and left to drain, so that never fewer than the configured
number of workers serve.
"""

from __future__ import annotations

from typing import Any, Generic, Protocol, TypeVar

from twisted.internet.defer import inlineCallbacks
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger

from .._common.events import Latch
from .respawn import RespawnPolicy
from .supervised import Supervised

W = TypeVar("W", bound=Supervised)


class Restarting(Protocol[W]):
    """
    What a rolling restart needs of the supervisor.
    """

    generation: int
    policy: RespawnPolicy

    @property
    def running(self) -> bool: ...

    def staleWorkers(self, excluding: set[int]) -> list[W]: ...

    def spawnInto(self, slot: int) -> W | None: ...

    def replaced(self, worker: W) -> None: ...


class RollingRestart(Generic[W]):
    """
    One rolling restart: it goes on until no worker older than the
    supervisor's current generation is left (a restart asked for meanwhile
    raises the generation, and this one goes on to it).

    @ivar tried: The workers it set out to replace.
    @ivar kept: Those it could not: their replacements kept failing to boot.
    @ivar replacedCount: How many it replaced.
    @ivar finished: Fires with C{replacedCount} once it is over.
    """

    _log = Logger()

    def __init__(self, supervisor: Restarting[W], clock: IReactorTime) -> None:
        self._supervisor = supervisor
        self._clock = clock
        self.tried: set[int] = set()
        self.kept: set[int] = set()
        self.replacedCount = 0
        self.finished: Latch[int] = Latch()

    @inlineCallbacks
    def run(self) -> Any:
        supervisor = self._supervisor
        while supervisor.running:
            stale = supervisor.staleWorkers(self.kept)
            if not stale:
                break
            worker = stale[0]
            self.tried.add(worker.id)
            if (yield self._replace(worker)):
                self.replacedCount += 1
            elif worker.isServing():
                self.kept.add(worker.id)
        self._log.info(
            "rolling restart {how}: {replaced} of {count} replaced (generation {generation}){kept}",
            how="done" if supervisor.running else "stopped",
            replaced=self.replacedCount,
            count=len(self.tried),
            generation=supervisor.generation,
            kept=f"; {len(self.kept)} kept, their replacements failed to boot" if self.kept else "",
        )
        self.finished.fire(self.replacedCount)

    @inlineCallbacks
    def _replace(self, worker: W) -> Any:
        """
        Start a new worker in C{worker}'s slot; once it is ready, let
        C{worker} drain.

        @return: Fires with whether it was replaced (not if the new workers
            kept failing to boot, or it is not to be replaced any more).
        """
        supervisor, tries, slot = self._supervisor, 0, worker.slot
        policy = supervisor.policy
        while worker.isServing() and slot is not None:
            new = supervisor.spawnInto(slot)
            if new is not None and (yield new.whenReady()):
                supervisor.replaced(worker)
                return True
            if not supervisor.running:
                return False
            tries += 1
            if tries >= policy.maxBootFailures:
                self._log.error(
                    "could not replace worker {workerId}: {tries} new workers failed to boot; "
                    "the last one said: {error}; keeping the old one",
                    workerId=worker.id,
                    tries=tries,
                    error=(new.lastError if new is not None else None) or "nothing",
                )
                return False
            yield deferLater(self._clock, policy.bootRetryDelay(tries), lambda: None)
        return False
