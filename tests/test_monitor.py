from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from twistcluster._master.monitor import WorkerMonitor, residentBytes


class FakeWorker:
    def __init__(self, id: int, state: str = "listening") -> None:
        self.id = id
        self.pid = 1000 + id
        self.state = state
        self.pings: list[Deferred[dict]] = []

    def isBooting(self) -> bool:
        return self.state in ("spawning", "online")

    def isReady(self) -> bool:
        return self.state == "listening"

    def callRemote(self, command: type, **arguments: object) -> Deferred[dict]:
        self.pings.append(Deferred())
        return self.pings[-1]


class WorkerMonitorTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.workers = [FakeWorker(1), FakeWorker(2)]
        self.hung: list[tuple[int, str]] = []
        self.big: list[tuple[int, int]] = []
        self.memory = {1001: 10 << 20, 1002: 10 << 20}
        self.monitor = WorkerMonitor(
            self.clock,
            lambda: self.workers,
            hung=lambda w, why: self.hung.append((w.id, why)),
            tooBig=lambda w, size: self.big.append((w.id, size)),
            workerTimeout=4,
            bootTimeout=8,
            maxMemory=100 << 20,
            memoryOf=self.memory.get,
        )
        self.monitor.start()

    def answerPings(self, worker: FakeWorker) -> None:
        for ping in worker.pings:
            if not ping.called:
                ping.callback({})

    def test_hungWorkerReportedOnceAfterTimeout(self) -> None:
        """
        A worker that answers no ping for longer than the timeout is reported
        once; one that answers is not.
        """
        for _ in range(30):
            self.clock.advance(self.monitor.interval)
            self.answerPings(self.workers[1])
        self.assertEqual(self.hung, [(1, "no heartbeat answer for 4s")])

    def test_onePingOutstandingAtATime(self) -> None:
        for _ in range(5):
            self.clock.advance(self.monitor.interval)
        self.assertEqual(len(self.workers[0].pings), 1)

    def test_bootDeadline(self) -> None:
        self.workers.append(FakeWorker(3, state="online"))
        for _ in range(8):
            self.clock.advance(self.monitor.interval)
            self.answerPings(self.workers[0])
            self.answerPings(self.workers[1])
        self.assertEqual(self.hung, [])
        self.clock.advance(self.monitor.interval * 2)
        self.assertIn((3, "was not ready after 8s"), self.hung)

    def test_memoryLimit(self) -> None:
        self.memory[1002] = 300 << 20
        self.clock.advance(self.monitor.interval)
        self.clock.advance(self.monitor.interval)
        self.assertEqual(self.big, [(2, 300 << 20)])

    def test_brokenCheckDoesNotStopTheWatch(self) -> None:
        """
        An error while checking one worker is logged; the others are still
        watched and the loop goes on.
        """

        def broken(command: type, **arguments: object) -> Deferred[dict]:
            raise RuntimeError("oops")

        self.workers[0].callRemote = broken  # type: ignore[method-assign]
        for _ in range(30):
            self.clock.advance(self.monitor.interval)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)) > 0, True)
        self.assertIn(2, [workerId for workerId, _ in self.hung])


class ResidentBytesTests(SynchronousTestCase):
    def test_ownProcess(self) -> None:
        import os

        size = residentBytes(os.getpid())
        self.assertIsNotNone(size)
        self.assertGreater(size, 1 << 20)

    def test_goneProcess(self) -> None:
        self.assertIsNone(residentBytes(2**22 + 12345))


class UnansweredHandOffTests(SynchronousTestCase):
    def test_workerSittingOnAHandOffIsHung(self) -> None:
        """
        A worker that answers its heartbeat but leaves a hand-off unanswered
        for longer than the worker timeout is reported hung, once.
        """
        clock = Clock()
        worker = FakeWorker(1)
        sentAt: dict[int, float | None] = {1: None}
        hung: list[tuple[int, str]] = []
        monitor = WorkerMonitor(
            clock,
            lambda: [worker],
            hung=lambda w, why: hung.append((w.id, why)),
            tooBig=lambda w, size: None,
            workerTimeout=4,
            bootTimeout=8,
            unansweredSince=lambda w: sentAt[w.id],
        )
        monitor.start()
        for _ in range(20):
            clock.advance(1)
            for ping in worker.pings:
                if not ping.called:
                    ping.callback({})
            if clock.seconds() == 3:
                sentAt[1] = clock.seconds()
        self.assertEqual(hung, [(1, "a hand-off unanswered for 4s")])

    def test_blockedWorkerIsTheHeartbeats(self) -> None:
        """
        A worker that answers nothing sent after the hand-off is blocked (the
        answer to a ping sent before may still arrive after it): reported
        for its heartbeat, not for the hand-off.
        """
        clock = Clock()
        worker = FakeWorker(1)
        hung: list[tuple[int, str]] = []
        monitor = WorkerMonitor(
            clock,
            lambda: [worker],
            hung=lambda w, why: hung.append((w.id, why)),
            tooBig=lambda w, size: None,
            workerTimeout=4,
            bootTimeout=8,
            unansweredSince=lambda w: 2.5,
        )
        monitor.start()
        sentAt: dict[int, float] = {}
        for _ in range(20):
            clock.advance(1)
            for i, ping in enumerate(worker.pings):
                sentAt.setdefault(i, clock.seconds())
                # Pings sent before the hand-off are answered, one second late.
                if not ping.called and sentAt[i] < 2.5 and clock.seconds() >= sentAt[i] + 1:
                    ping.callback({})
        self.assertEqual(hung, [(1, "no heartbeat answer for 4s")])
