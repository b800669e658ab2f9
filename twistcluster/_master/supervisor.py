# -*- test-case-name: tests.test_supervisor, tests.test_departures -*-
"""
C{twist cluster}'s workers kept serving: a fixed number of slots, each with
a worker; a replacement for one that dies (with backoff, and giving up when
no worker ever boots); a new worker ready before an old one drains (rolling
restarts, worn-out workers); scaling.

It decides; a L{Spawner<twistcluster._master.spawner.Spawner>} starts the
processes.  Both are injected, with the clock, so every decision is tested
without processes (as C{twisted.trial._dist} tests its pool).  L{Departures}
keeps the workers on their way out, and sends them off.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from typing import Generic

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from .departures import Departure, Departures
from .respawn import RespawnPolicy
from .restart import RollingRestart
from .spawner import WorkerCommand
from .supervised import RestartCause, SpawnsWorkers, Supervised, W


def _said(worker: Supervised, cause: RestartCause) -> str:
    if cause is RestartCause.BOOT_FAILURE and worker.lastError:
        return f" ({worker.lastError})"
    return ""


def _jitter(most: int) -> int:
    return random.randint(0, most)


class Supervisor(Generic[W]):
    """
    Keeps C{size} workers serving, one in each slot C{0..size-1}.

    @ivar workers: Every live worker, by id, leaving ones included.
    @ivar size: How many slots.
    @ivar generation: How many rolling restarts were asked for; each worker
        is spawned in the current one.
    @ivar restarts: How many workers were replaced, by L{RestartCause}.
    @ivar spawnFailures: Failed attempts to start a process (C{EMFILE}...)
        since the last one that started.
    @ivar _departures: The workers on their way out (worn out, dismissed,
        hung).
    @ivar _respawning: Slots waiting to be filled again, after a backoff.
    @ivar journal: Told of each lifecycle event (C{fork}, C{ready}, C{hung},
        C{worn-out}, C{disconnect}, C{exit}) with its worker and reason, for
        the operator's status (L{twistcluster._master.journal.Journal}).
    """

    _log = Logger()

    def __init__(
        self,
        spawner: SpawnsWorkers[W],
        clock: IReactorTime,
        command: WorkerCommand,
        size: int,
        gaveUp: Callable[[str], object] = lambda reason: None,
        policy: RespawnPolicy | None = None,
        maxConnections: int | None = None,
        jitter: Callable[[int], int] = _jitter,
    ) -> None:
        self._spawner = spawner
        self._clock = clock
        self._command = command
        self.size = size
        self._gaveUp = gaveUp
        self.policy = policy if policy is not None else RespawnPolicy(clock)
        self._maxConnections = maxConnections
        self._jitter = jitter
        self.workers: dict[int, W] = {}
        self.generation = 0
        self.restarts: Counter[RestartCause] = Counter()
        self.spawnFailures = 0
        self._running = False
        self._givenUp = False
        self._departures: Departures[W] = Departures(
            lambda event, worker, reason: self.journal(event, worker, reason)
        )
        self._respawning: dict[int, IDelayedCall] = {}
        self._restart: RollingRestart[W] | None = None
        self.journal: Callable[[str, W, str], object] = lambda event, worker, reason: None
        #: Called when a worker became ready or exited (the master keeps the
        #: service manager's STATUS= and READY=1 current with it).
        self.changed: Callable[[], object] = lambda: None
        #: The most workers C{grow} may reach, and why (L{None}: no limit).
        self.maxSize: tuple[int, str] | None = None

    def serving(self) -> list[W]:
        """
        The workers not leaving.
        """
        return [w for w in self.workers.values() if w.isServing()]

    @property
    def readyCount(self) -> int:
        return sum(w.isReady() for w in self.workers.values())

    def start(self) -> None:
        self._running = True
        self._replenish()

    # Filling the slots

    def _filled(self, slot: int | None) -> bool:
        return any(
            w.slot == slot and w.isServing() and not self._departures.isWornOut(w)
            for w in self.workers.values()
        )

    def _replenish(self) -> None:
        for slot in range(self.size):
            if not self._running:
                return
            if slot not in self._respawning and not self._filled(slot) and self._spawn(slot) is None:
                # Retried later, for every empty slot at once.
                return

    def _spawn(self, slot: int) -> W | None:
        """
        Start a worker in C{slot}; if the process cannot be started, try
        again later with the boot-failure backoff.

        @return: The worker, or L{None} if it could not be started.
        """
        try:
            worker = self._spawner.spawn(self._command, slot, self.generation)
        except Exception as e:
            self._spawnFailed(slot, e)
            return None
        if self.spawnFailures:
            self._log.info(
                "worker {workerId} started, after {failures} failed attempts",
                workerId=worker.id,
                failures=self.spawnFailures,
            )
            self.spawnFailures = 0
        if self._maxConnections:
            worker.connectionLimit = self._maxConnections + self._jitter(self._maxConnections // 10)
        self._watch(worker)
        self.journal("fork", worker, f"pid {worker.pid}, generation {worker.generation}")
        return worker

    def _watch(self, worker: W) -> None:
        self.workers[worker.id] = worker
        worker.whenReady().addCallback(self._readiness, worker)
        worker.whenWornOut().addCallback(lambda why: self.retire(worker, RestartCause.CONNECTION_LIMIT, why))
        worker.whenExited().addCallback(lambda status: self._exited(worker, *status))

    def adopt(self, workers: list[W], wornOut: list[int], dismissed: list[int], hung: list[int]) -> None:
        """
        Take over the workers an earlier image of the master started (an
        upgrade), with those of them that are on their way out.
        """
        for worker in workers:
            self._watch(worker)
        self._departures.carriedOver(self.workers, wornOut, dismissed, hung)

    def leaving(self) -> tuple[list[int], list[int], list[int]]:
        """
        The workers on their way out, by id: worn out (still serving until
        their replacement is ready), dismissed, hung.
        """
        return self._departures.leaving()

    @property
    def restarting(self) -> bool:
        """
        Is a rolling restart under way?
        """
        return self._restart is not None

    def _spawnFailed(self, slot: int, error: Exception) -> None:
        self.spawnFailures += 1
        delay = self.policy.workerDied(wasReady=False)
        if delay is None:
            self._giveUp(f"cannot start a worker process ({self.spawnFailures} tries): {error}")
            return
        if self.spawnFailures == 1:
            # Once per episode: under EMFILE the retries would flood the log.
            self._log.error(
                "cannot start a worker process: {error}; retrying with backoff (next in {delay:.1f}s)",
                error=error,
                delay=delay,
            )
        self._respawnLater(slot, delay)

    def _respawnLater(self, slot: int, delay: float) -> None:
        if slot in self._respawning:
            return

        def respawn() -> None:
            del self._respawning[slot]
            self._replenish()

        self._respawning[slot] = self._clock.callLater(delay, respawn)

    def _giveUp(self, reason: str) -> None:
        if self._givenUp:
            return
        self._givenUp = True
        self.halt()
        self._gaveUp(reason)

    def halt(self) -> None:
        """
        Replace nothing from now on, and start no more workers: the master
        is stopping (L{twistcluster._master.shutdown} disconnects them).
        """
        self._running = False
        for call in self._respawning.values():
            call.cancel()
        self._respawning.clear()

    # What the workers do

    def _readiness(self, ready: bool, worker: W) -> None:
        if ready:
            self.journal("ready", worker, "")
            self.policy.workerReady()
            self._departures.relieve(self.workers.values())
        self.changed()

    def _exited(self, worker: W, code: int | None, signal: int | None) -> None:
        self.workers.pop(worker.id, None)
        self.changed()
        departure = self._departures.exited(worker)
        replaced = departure is Departure.ASKED
        status = f"signal {signal}" if signal is not None else f"code {code}"
        if not self._running or replaced:
            self.journal("exit", worker, f"{status}, after it was asked to leave" if replaced else status)
        if not self._running:
            return
        if replaced:
            self._replenish()
            return
        delay = self.policy.workerDied(worker.everReady)
        if delay is None:
            self._giveUp(
                f"workers keep failing to boot ({self.policy.bootFailures} in a row, none ever ready); "
                f"the last one said: {worker.lastError or 'nothing'}"
            )
            return
        cause = RestartCause.BOOT_FAILURE
        if worker.everReady:
            cause = RestartCause.HUNG if departure is Departure.HUNG else RestartCause.CRASH
        self.restarts[cause] += 1
        why = f"{status}: {cause}{_said(worker, cause)}"
        if worker.slot is None or self._filled(worker.slot):
            # A rolling restart's new worker (the restart retries itself), or
            # one whose slot was filled once its channel closed.
            self.journal("exit", worker, f"{why}; its slot has a worker already")
            return
        self.journal("exit", worker, f"{why}; replaced in {delay:.1f}s")
        self._log.info(
            "replacing worker {workerId} (slot {slot}) in {delay:.1f}s",
            workerId=worker.id,
            slot=worker.slot,
            delay=delay,
        )
        self._respawnLater(worker.slot, delay)

    # Workers that must go

    def workerHung(self, worker: W, why: str) -> None:
        """
        C{worker} stopped answering (or never became ready): abort it; it is
        replaced once it has exited.
        """
        self._departures.hang(worker, why)

    def retire(self, worker: W, cause: RestartCause, why: str) -> None:
        """
        C{worker} is worn out: start its replacement now; it leaves the
        rotation (and drains) at once if another worker is ready to take its
        share, else as soon as one is.
        """
        if not self._running or not worker.isServing() or self._departures.isWornOut(worker):
            return
        self.restarts[cause] += 1
        self._departures.wearOut(worker, cause, why, self.workers.values())
        self._replenish()

    def _trim(self) -> None:
        for worker in self.serving():
            if worker.slot is None or worker.slot >= self.size:
                self._departures.dismiss(worker)

    # Rolling restarts (L{RollingRestart}): a new worker must be ready before
    # an old one goes.

    def restartAll(self) -> Deferred[int]:
        """
        A rolling restart: the workers are replaced one at a time by new ones
        (which load the code afresh), never leaving fewer than C{size} ready.
        Asked again while one runs, that one goes on to the new generation:
        every worker started before the latest request is replaced.

        @return: Fires with how many workers were replaced.
        """
        self.generation += 1
        stale = len(self.staleWorkers(set()))
        joining = self._restart is not None
        self._log.info(
            "rolling restart of {count} workers (generation {generation}){joining}",
            count=stale,
            generation=self.generation,
            joining=": the restart under way goes on to it" if joining else "",
        )
        if self._restart is None:
            self._restart = RollingRestart(self, self._clock)
            self._restart.run().addBoth(self._restartEnded)
        return self._restart.finished.wait()

    def _restartEnded(self, result: object) -> None:
        self._restart = None

    @property
    def running(self) -> bool:
        return self._running

    def staleWorkers(self, excluding: set[int]) -> list[W]:
        """
        The serving workers of an older generation than the current one (but
        those already being replaced, and those in C{excluding}), oldest
        first.
        """
        stale = [
            w
            for w in self.serving()
            if w.generation < self.generation and w.id not in excluding and not self._departures.isWornOut(w)
        ]
        return sorted(stale, key=lambda w: (w.generation, w.slot or 0, w.id))

    def spawnInto(self, slot: int) -> W | None:
        """
        Start one more worker in C{slot} (its worker is being replaced).

        @return: The new worker; L{None} if there is no such slot any more or
            the process could not be started (it is retried later).
        """
        if not self._running or slot >= self.size:
            return None
        return self._spawn(slot)

    def replaced(self, worker: W) -> None:
        """
        C{worker}'s replacement is ready: let it drain.
        """
        self.restarts[RestartCause.RELOAD] += 1
        self._departures.dismiss(worker)
        self._trim()

    # Scaling

    def grow(self) -> None:
        if self.maxSize is not None and self.size >= self.maxSize[0]:
            self._log.warn(
                "not adding a worker beyond {size}: {why}", size=self.maxSize[0], why=self.maxSize[1]
            )
            return
        self.size += 1
        self._log.info("one worker more: {size}", size=self.size)
        self._replenish()

    def shrink(self) -> None:
        if self.size <= 1:
            self._log.warn("not shrinking below one worker")
            return
        self.size -= 1
        self._log.info("one worker fewer: {size}", size=self.size)
        pending = self._respawning.pop(self.size, None)
        if pending is not None:
            pending.cancel()
        self._trim()

    # Stopping

    def killAll(self) -> None:
        for worker in list(self.workers.values()):
            worker.kill("KILL")
