"""
The supervisor's decisions, with a fake spawner and a fake clock: no
processes (as twisted.trial._dist tests its pool).
"""

from __future__ import annotations

import errno
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from twistcluster._common.events import Latch
from twistcluster._master.respawn import RespawnPolicy
from twistcluster._master.spawner import WorkerCommand
from twistcluster._master.supervised import RestartCause
from twistcluster._master.supervisor import Supervisor

COMMAND = WorkerCommand(["python", "-m", "worker"])


class FakeWorker:
    """
    A worker whose life the test drives: L{ready}, L{exit}.
    """

    def __init__(self, id: int, slot: int | None, generation: int) -> None:
        self.id, self.pid, self.slot, self.generation = id, 1000 + id, slot, generation
        self.everReady = False
        self.lastError: str | None = None
        self.connectionLimit: int | None = None
        self.phase = "booting"
        self.aborted: str | None = None
        self.signals: list[str | int] = []
        self._ready: Latch[bool] = Latch()
        self._exited: Latch[tuple[int | None, int | None]] = Latch()
        self._wornOut: Latch[str] = Latch()

    def __repr__(self) -> str:
        return f"<FakeWorker {self.id} slot={self.slot} gen={self.generation} {self.phase}>"

    def isServing(self) -> bool:
        return self.phase in ("booting", "ready")

    def isReady(self) -> bool:
        return self.phase == "ready"

    def whenReady(self) -> Deferred[bool]:
        return self._ready.wait()

    def whenExited(self) -> Deferred[Any]:
        return self._exited.wait()

    def whenWornOut(self) -> Deferred[str]:
        return self._wornOut.wait()

    def disconnect(self) -> None:
        if self.isServing():
            self.phase = "leaving"
            self._ready.fire(False)

    def kill(self, signal: str | int = "TERM") -> None:
        self.signals.append(signal)

    def abort(self, why: str) -> None:
        self.aborted = why

    def ready(self) -> None:
        self.phase = "ready"
        self.everReady = True
        self._ready.fire(True)

    def exit(self, code: int | None = 0, signal: int | None = None, said: str | None = None) -> None:
        self.lastError = said
        self.phase = "dead"
        self._ready.fire(False)
        self._exited.fire((code, signal))

    def wearOut(self, why: str) -> None:
        self._wornOut.fire(why)


class FakeSpawner:
    """
    Makes L{FakeWorker}s, or raises L{failure} as C{spawnProcess} would.
    """

    def __init__(self) -> None:
        self.spawned: list[FakeWorker] = []
        self.failure: Exception | None = None
        self.attempts = 0

    def spawn(self, command: WorkerCommand, slot: int | None, generation: int) -> FakeWorker:
        assert command is COMMAND
        self.attempts += 1
        if self.failure is not None:
            raise self.failure
        worker = FakeWorker(len(self.spawned) + 1, slot, generation)
        self.spawned.append(worker)
        return worker


class SupervisorTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.spawner = FakeSpawner()
        self.reasons: list[str] = []
        self.policy = RespawnPolicy(
            self.clock,
            bootRetryDelay=lambda n: 0.1 * 2**n,
            crashRetryDelay=lambda n: 0.5 * 2**n,
            maxBootFailures=3,
            flapWindow=60,
            flapThreshold=2,
        )

    def supervisor(self, size: int, **kwargs: Any) -> Supervisor:
        supervisor = Supervisor(
            self.spawner, self.clock, COMMAND, size, gaveUp=self.reasons.append, policy=self.policy, **kwargs
        )
        supervisor.start()
        return supervisor

    def started(self, size: int, **kwargs: Any) -> Supervisor:
        """
        A supervisor whose C{size} first workers are ready.
        """
        supervisor = self.supervisor(size, **kwargs)
        for worker in list(self.spawner.spawned):
            worker.ready()
        return supervisor

    def w(self, id: int) -> FakeWorker:
        return self.spawner.spawned[id - 1]

    def serving(self, supervisor: Supervisor) -> list[tuple[int, int | None, int]]:
        """
        (id, slot, generation) of each serving worker.
        """
        return sorted((w.id, w.slot, w.generation) for w in supervisor.serving())


class SlotTests(SupervisorTestCase):
    def test_everySlotFilled(self) -> None:
        """
        Starting fills slots 0..size-1, in the first generation.
        """
        supervisor = self.supervisor(3)
        self.assertEqual(self.serving(supervisor), [(1, 0, 0), (2, 1, 0), (3, 2, 0)])

    def test_crashReplacedInItsSlot(self) -> None:
        """
        A ready worker that dies is replaced at once (on the next turn), in
        its slot, by a worker with a new id; it counts as a crash.
        """
        supervisor = self.started(2)
        self.w(1).exit(1)
        self.assertEqual(len(self.spawner.spawned), 2)
        self.clock.advance(0)
        self.assertEqual(self.serving(supervisor), [(2, 1, 0), (3, 0, 0)])
        self.assertEqual(supervisor.restarts, {RestartCause.CRASH: 1})

    def test_connectionLimitWithJitter(self) -> None:
        """
        Each worker's connection limit is the maximum plus up to 10% jitter.
        """
        self.supervisor(1, maxConnections=20, jitter=lambda most: most)
        self.assertEqual(self.w(1).connectionLimit, 22)


class BootFailureTests(SupervisorTestCase):
    def test_bootFailuresBackOffThenGiveUp(self) -> None:
        """
        Workers that die before they are ready, none ever ready: respawned
        with backoff, and after C{maxBootFailures} the supervisor gives up
        once, with the last worker's own words; nothing is respawned or
        scheduled after that, and nothing says it will be (issue 13, 10).
        """
        supervisor = self.supervisor(2)
        with capturedLogs() as events:
            self.w(1).exit(3, said="RuntimeError: boom")
            self.w(2).exit(3, said="RuntimeError: boom")
            self.assertEqual(len(self.spawner.spawned), 2)
            self.clock.advance(0.4)
            self.assertEqual(len(self.spawner.spawned), 4)
            self.assertEqual(self.reasons, [])
            self.w(3).exit(3, said="RuntimeError: last words")
            self.assertEqual(
                self.reasons,
                [
                    "workers keep failing to boot (3 in a row, none ever ready); "
                    "the last one said: RuntimeError: last words"
                ],
            )
            self.assertEqual(self.clock.getDelayedCalls(), [])
            self.w(4).exit(3)
        replacing = [formatEvent(e) for e in events if "replacing" in formatEvent(e)]
        self.assertEqual(len(replacing), 2, replacing)
        self.assertEqual(len(self.reasons), 1)
        self.assertEqual(len(self.spawner.spawned), 4)
        self.assertEqual(supervisor.restarts, {RestartCause.BOOT_FAILURE: 2})

    def test_nothingAfterGivingUp(self) -> None:
        """
        Once it gave up, a worker that still exits is neither replaced nor
        said to be.
        """
        supervisor = self.supervisor(3)
        for id in (1, 2, 3):
            self.w(id).exit(3)
        self.assertEqual(len(self.reasons), 1)
        with capturedLogs() as events:
            self.clock.advance(60)
            for worker in supervisor.serving():
                worker.exit(3)
        self.assertEqual(events, [])
        self.assertEqual(len(self.spawner.spawned), 3)

    def test_readyOnceNeverGivesUp(self) -> None:
        """
        Once a worker was ready, boot failures are retried for ever, with
        backoff.
        """
        self.started(1)
        self.w(1).exit(1)
        for n in range(2, 8):
            self.clock.advance(60)
            self.w(n).exit(3)
        self.assertEqual(self.reasons, [])
        self.clock.advance(60)
        self.assertEqual(self.w(8).phase, "booting")


class FlappingTests(SupervisorTestCase):
    def test_crashesBackOffWhenFlapping(self) -> None:
        """
        Crashes beyond C{flapThreshold} within the window back off.
        """
        self.started(1)
        self.w(1).exit(1)
        self.clock.advance(0)
        self.w(2).ready()
        self.w(2).exit(1)
        self.clock.advance(0)
        self.w(3).ready()
        self.w(3).exit(1)
        self.clock.advance(0.9)
        self.assertEqual(len(self.spawner.spawned), 3)
        self.clock.advance(0.1)
        self.assertEqual(len(self.spawner.spawned), 4)


class FailedSpawnTests(SupervisorTestCase):
    def test_failedSpawnRetriedWithBackoffLoggedOnce(self) -> None:
        """
        C{spawnProcess} raising (C{EMFILE}) is retried with the boot-failure
        backoff, logged once for the whole episode, and once more when a
        worker starts again (issue 13, 4).
        """
        supervisor = self.started(2)
        self.spawner.failure = OSError(errno.EMFILE, "Too many open files")
        with capturedLogs() as events:
            self.w(1).exit(1)
            self.clock.advance(0)
            for delay in (0.2, 0.4, 0.8, 1.6):
                self.clock.advance(delay)
            self.assertEqual(self.spawner.attempts, 2 + 5)
            self.spawner.failure = None
            self.clock.advance(3.2)
        self.assertEqual(self.serving(supervisor), [(2, 1, 0), (3, 0, 0)])
        texts = [formatEvent(e) for e in events]
        failures = [t for t in texts if "Too many open files" in t]
        self.assertEqual(len(failures), 1, texts)
        self.assertIn("cannot start a worker process: [Errno 24] Too many open files", failures[0])
        self.assertIn("worker 3 started, after 5 failed attempts", texts)
        self.assertEqual(self.reasons, [])
        self.assertEqual(supervisor.spawnFailures, 0)

    def test_failedSpawnAtStartGivesUp(self) -> None:
        """
        With no worker ever ready, a spawn that keeps failing ends the
        master like a worker that keeps failing to boot.
        """
        self.spawner.failure = OSError(errno.EMFILE, "Too many open files")
        self.supervisor(4)
        self.assertEqual(self.spawner.attempts, 1)
        self.clock.advance(0.2)
        self.clock.advance(0.4)
        self.assertEqual(
            self.reasons, ["cannot start a worker process (3 tries): [Errno 24] Too many open files"]
        )
        self.assertEqual(self.clock.getDelayedCalls(), [])


class WornOutTests(SupervisorTestCase):
    def test_leavesAtOnceWhileAnotherIsReady(self) -> None:
        """
        A worn-out worker leaves the rotation at once when another worker is
        ready; its replacement starts in its slot (issue 13, 11).
        """
        supervisor = self.started(2)
        self.w(1).wearOut("took 20 connections")
        self.assertEqual(self.w(1).phase, "leaving")
        self.assertEqual(self.serving(supervisor), [(2, 1, 0), (3, 0, 0)])
        self.assertEqual(supervisor.restarts, {RestartCause.CONNECTION_LIMIT: 1})
        self.w(1).exit(0)
        self.assertEqual(len(self.spawner.spawned), 3)

    def test_lastOneServesUntilAnotherIsReady(self) -> None:
        """
        Every other worker worn out or booting: the worn-out one serves on
        until any other worker is ready, then leaves.
        """
        supervisor = self.started(2)
        supervisor.retire(self.w(1), RestartCause.MEMORY, "uses 200 MiB")
        self.w(2).wearOut("took 20 connections")
        self.assertEqual((self.w(1).phase, self.w(2).phase), ("leaving", "ready"))
        self.assertEqual([w.slot for w in self.spawner.spawned[2:]], [0, 1])
        self.w(3).ready()
        self.assertEqual(self.w(2).phase, "leaving")
        self.assertEqual(self.serving(supervisor), [(3, 0, 0), (4, 1, 0)])
        self.assertEqual(supervisor.restarts, {RestartCause.MEMORY: 1, RestartCause.CONNECTION_LIMIT: 1})

    def test_replacementFailsToBoot(self) -> None:
        """
        The last worn-out worker serves on while its replacements fail to
        boot, and they are retried with backoff.
        """
        supervisor = self.started(1)
        self.w(1).wearOut("took 5 connections")
        self.w(2).exit(3)
        self.assertEqual(self.w(1).phase, "ready")
        self.clock.advance(0.2)
        self.w(3).ready()
        self.assertEqual(self.w(1).phase, "leaving")
        self.assertEqual(self.serving(supervisor), [(3, 0, 0)])


class HungTests(SupervisorTestCase):
    def test_hungAbortedThenReplaced(self) -> None:
        supervisor = self.started(1)
        supervisor.workerHung(self.w(1), "no heartbeat answer for 3s")
        self.assertEqual(self.w(1).aborted, "no heartbeat answer for 3s")
        self.w(1).exit(None, 6)
        self.clock.advance(0)
        self.assertEqual(self.serving(supervisor), [(2, 0, 0)])
        self.assertEqual(supervisor.restarts, {RestartCause.HUNG: 1})


class RollingRestartTests(SupervisorTestCase):
    def test_replacementReadyBeforeDrain(self) -> None:
        """
        Each old worker is told to leave only once its replacement, in its
        slot and of the new generation, is ready; one at a time.
        """
        supervisor = self.started(2)
        with capturedLogs() as events:
            done = supervisor.restartAll()
            self.assertEqual(self.serving(supervisor), [(1, 0, 0), (2, 1, 0), (3, 0, 1)])
            self.assertEqual(self.w(1).phase, "ready")
            self.w(3).ready()
            self.assertEqual(self.w(1).phase, "leaving")
            self.assertEqual(self.serving(supervisor), [(2, 1, 0), (3, 0, 1), (4, 1, 1)])
            self.w(1).exit(0)
            self.w(4).ready()
        self.assertEqual(self.w(2).phase, "leaving")
        self.assertEqual(self.successResultOf(done), 2)
        self.assertEqual(self.serving(supervisor), [(3, 0, 1), (4, 1, 1)])
        self.assertEqual(supervisor.restarts, {RestartCause.RELOAD: 2})
        texts = [formatEvent(e) for e in events]
        self.assertEqual(texts[0], "rolling restart of 2 workers (generation 1)")
        self.assertEqual(texts[-1], "rolling restart done: 2 of 2 replaced (generation 1)")

    def test_overlappingRestartsGoOnToTheNewGeneration(self) -> None:
        """
        A second restart asked for while one runs: the one under way goes
        on until every worker started before the second request is replaced
        (a replacement started in between too), and says so truthfully.
        """
        supervisor = self.started(2)
        with capturedLogs() as events:
            first = supervisor.restartAll()
            second = supervisor.restartAll()
            self.w(3).ready()
            self.w(4).ready()
            self.assertEqual((self.w(4).slot, self.w(4).generation), (1, 2))
            self.w(5).ready()
            self.assertEqual((self.w(5).slot, self.w(5).generation), (0, 2))
        self.assertEqual(self.successResultOf(first), 3)
        self.assertEqual(self.successResultOf(second), 3)
        self.assertEqual(self.serving(supervisor), [(4, 1, 2), (5, 0, 2)])
        self.assertEqual(len(self.spawner.spawned), 5)
        texts = [formatEvent(e) for e in events]
        self.assertEqual(
            texts[:2],
            [
                "rolling restart of 2 workers (generation 1)",
                "rolling restart of 3 workers (generation 2): the restart under way goes on to it",
            ],
        )
        self.assertEqual(texts[-1], "rolling restart done: 3 of 3 replaced (generation 2)")

    def test_oldWorkerKeptWhenReplacementsFailToBoot(self) -> None:
        supervisor = self.started(1)
        with capturedLogs() as events:
            done = supervisor.restartAll()
            self.w(2).exit(3, said="SyntaxError: new code")
            self.clock.advance(0.2)
            self.w(3).exit(3, said="SyntaxError: new code")
            self.clock.advance(0.4)
            self.w(4).exit(3, said="SyntaxError: new code")
        self.assertEqual(self.successResultOf(done), 0)
        self.assertEqual(self.serving(supervisor), [(1, 0, 0)])
        texts = [formatEvent(e) for e in events]
        self.assertIn(
            "could not replace worker 1: 3 new workers failed to boot; the last one said: "
            "SyntaxError: new code; keeping the old one",
            texts,
        )
        self.assertEqual(
            texts[-1],
            "rolling restart done: 0 of 1 replaced (generation 1); 1 kept, their replacements failed to boot",
        )
        self.assertEqual(self.reasons, [])

    def test_haltDuringRestart(self) -> None:
        """
        Once halted (the master is stopping), nothing that exits is
        replaced, and the restart under way ends when its new worker leaves
        (the shutdown disconnects every worker).
        """
        supervisor = self.started(2)
        done = supervisor.restartAll()
        supervisor.halt()
        self.w(1).exit(1)
        for worker in list(supervisor.workers.values()):
            worker.disconnect()
        self.assertEqual(self.successResultOf(done), 0)
        for worker in list(supervisor.workers.values()):
            worker.exit(0)
        self.assertEqual(supervisor.workers, {})
        self.assertEqual(len(self.spawner.spawned), 3)
        self.assertEqual(self.clock.getDelayedCalls(), [])


class ScalingTests(SupervisorTestCase):
    def test_growAndShrink(self) -> None:
        """
        One more fills the next slot; one fewer drains the worker of the
        highest slot.
        """
        supervisor = self.started(2)
        supervisor.grow()
        self.assertEqual(self.serving(supervisor), [(1, 0, 0), (2, 1, 0), (3, 2, 0)])
        supervisor.shrink()
        self.assertEqual(self.w(3).phase, "leaving")
        self.w(3).exit(0)
        self.assertEqual(self.serving(supervisor), [(1, 0, 0), (2, 1, 0)])

    def test_notBelowOne(self) -> None:
        supervisor = self.started(1)
        with capturedLogs() as events:
            supervisor.shrink()
        self.assertEqual(supervisor.size, 1)
        self.assertEqual(self.w(1).phase, "ready")
        self.assertEqual([formatEvent(e) for e in events], ["not shrinking below one worker"])

    def test_shrinkDuringRestart(self) -> None:
        """
        Scaling down while the highest slot's worker is being replaced: both
        leave, and the restart ends.
        """
        supervisor = self.started(2)
        supervisor.restartAll()
        self.w(3).ready()
        self.assertEqual(self.w(4).slot, 1)
        supervisor.shrink()
        self.assertEqual((self.w(2).phase, self.w(4).phase), ("leaving", "leaving"))
        self.assertEqual(self.serving(supervisor), [(3, 0, 1)])
