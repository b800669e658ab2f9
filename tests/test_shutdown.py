"""
The graceful stop both faces share (twistcluster._master.shutdown), with
fake handles, fake workers and a fake clock.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from twistcluster._common.events import Latch
from twistcluster._master.shutdown import shutDown


class FakeHandle:
    def __init__(self, name: str, log: list[str]) -> None:
        self.name, self._log = name, log
        self.idle: Deferred[None] = Deferred()

    def stopAccepting(self) -> Deferred[None]:
        self._log.append(f"{self.name} stops accepting")
        return succeed(None)

    def whenIdle(self) -> Deferred[None]:
        return self.idle

    def closeWaiting(self) -> None:
        self._log.append(f"{self.name} closes what waits")


class FakeHandles:
    def __init__(self, *handles: FakeHandle) -> None:
        self.handles = list(handles)

    def __iter__(self) -> Any:
        return iter(list(self.handles))

    def discard(self, handle: FakeHandle) -> None:
        self.handles.remove(handle)


class FakeWorker:
    def __init__(self, id: int, log: list[str], ready: bool = True) -> None:
        self.id, self._log, self._ready = id, log, ready
        self._exited: Latch[tuple[int, None]] = Latch()

    def isReady(self) -> bool:
        return self._ready

    def whenExited(self) -> Deferred[tuple[int, None]]:
        return self._exited.wait()

    def disconnect(self) -> None:
        self._log.append(f"worker {self.id} disconnects")

    def exit(self) -> None:
        self._exited.fire((0, None))


class ShutDownTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.log: list[str] = []
        self.a, self.b = FakeHandle("a", self.log), FakeHandle("b", self.log)
        self.handles = FakeHandles(self.a, self.b)

    def test_acceptedConnectionsReachAWorkerBeforeTheWorkersLeave(self) -> None:
        """
        Every handle stops accepting; the workers are told to leave only once
        every accepted connection reached one; it is over when every worker
        has exited, and then what still waits is closed and the handles
        forgotten.
        """
        workers = [FakeWorker(1, self.log), FakeWorker(2, self.log)]
        done = shutDown(self.handles, lambda: workers, self.clock, 30)
        self.assertEqual(self.log, ["a stops accepting", "b stops accepting"])
        self.a.idle.callback(None)
        self.b.idle.callback(None)
        self.assertEqual(self.log[2:], ["worker 1 disconnects", "worker 2 disconnects"])
        workers[0].exit()
        self.assertNoResult(done)
        workers[1].exit()
        self.successResultOf(done)
        self.assertEqual(self.log[4:], ["a closes what waits", "b closes what waits"])
        self.assertEqual(self.handles.handles, [])

    def test_handOffsWaitedForAtMostTheTimeout(self) -> None:
        workers = [FakeWorker(1, self.log)]
        shutDown(self.handles, lambda: workers, self.clock, 30)
        self.clock.advance(29)
        self.assertNotIn("worker 1 disconnects", self.log)
        self.clock.advance(1)
        self.assertIn("worker 1 disconnects", self.log)

    def test_noReadyWorkerNoWait(self) -> None:
        """
        With no worker serving, nobody can take what waits: the workers
        (booting) leave at once, and nothing else is waited for.
        """
        workers = [FakeWorker(1, self.log, ready=False)]
        done = shutDown(self.handles, lambda: workers, self.clock, 30)
        self.assertIn("worker 1 disconnects", self.log)
        workers[0].exit()
        self.successResultOf(done)

    def test_noWorkers(self) -> None:
        self.successResultOf(shutDown(self.handles, lambda: [], self.clock, 30))
        self.assertEqual(self.handles.handles, [])
