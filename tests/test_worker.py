"""
The master's record of one worker (twistcluster._master.worker.Worker),
with a fake clock, a fake process and fake handles: no processes.
"""

from __future__ import annotations

import signal
from typing import Any

from twisted.internet.error import ProcessExitedAlready, ProcessTerminated
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from twistcluster._master.worker import Worker


class FakeProcess:
    pid = 4242

    def __init__(self) -> None:
        self.signals: list[int] = []
        self.stopped = False

    def signalProcess(self, signum: int) -> None:
        if self.stopped and signum != signal.SIGKILL:
            # A stopped process takes nothing but SIGKILL (and SIGCONT).
            return
        self.signals.append(signum)


class FakeHandles:
    def __init__(self) -> None:
        self.leaving: list[Worker] = []
        self.gone: list[Worker] = []

    def workerLeaving(self, worker: Worker) -> None:
        self.leaving.append(worker)

    def workerGone(self, worker: Worker) -> None:
        self.gone.append(worker)

    def workerListening(self, worker: Worker, key: str) -> bool:
        return True


class FakeChannel:
    transport = None

    def callRemote(self, command: type, **arguments: Any) -> Any:
        from twisted.internet.defer import Deferred

        return Deferred()


class AbortTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.handles = FakeHandles()
        self.process = FakeProcess()
        self.worker = Worker(1, self.clock, self.handles, shutdownTimeout=30)  # type: ignore[arg-type]
        self.worker.attach(self.process, FakeChannel())  # type: ignore[arg-type]
        self.worker.saidOnline()
        self.worker.listeningOn("key")

    def test_aWorkerThatSurvivesSIGABRTIsKilledAndItsExitHandled(self) -> None:
        """
        A hung worker that takes no SIGABRT (stopped) is killed after the
        abort grace, and its exit is handled like any other: it is out of
        the handles, its exit is announced, nothing is left scheduled
        (issue 13, 1: the fired kill timer was cancelled again, and the
        exit was lost).
        """
        self.process.stopped = True
        exited = self.worker.whenExited()
        self.worker.abort("no heartbeat answer for 3s")
        self.assertEqual(self.handles.leaving, [self.worker])
        self.assertEqual(self.process.signals, [])
        self.clock.advance(Worker.abortGrace)
        self.assertEqual(self.process.signals, [signal.SIGKILL])
        self.worker.processEnded(Failure(ProcessTerminated(None, signal.SIGKILL)))
        self.assertEqual(self.successResultOf(exited), (None, signal.SIGKILL))
        self.assertTrue(self.worker.isDead())
        self.assertEqual(self.handles.gone, [self.worker])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_abortedWorkerThatDiesOfItsAbortIsNotKilledAgain(self) -> None:
        exited = self.worker.whenExited()
        self.worker.abort("no heartbeat answer for 3s")
        self.assertEqual(self.process.signals, [signal.SIGABRT])
        self.worker.processEnded(Failure(ProcessTerminated(None, signal.SIGABRT)))
        self.assertEqual(self.successResultOf(exited), (None, signal.SIGABRT))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_killOnceGone(self) -> None:
        """
        Signalling a process that already exited says it was not sent.
        """

        def gone(signum: int) -> None:
            raise ProcessExitedAlready()

        self.process.signalProcess = gone  # type: ignore[method-assign]
        self.assertFalse(self.worker.kill("TERM"))
