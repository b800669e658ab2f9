"""
The pick strategies' decisions, through the hand-off scheduler, without I/O.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from tests.test_scheduling import make
from twistcluster._master.picking import LeastConnections


class LeastConnectionsTests(SynchronousTestCase):
    """
    least-conn: the same scheduler, picking the worker with the fewest live
    connections among those with room in their window.
    """

    def setUp(self) -> None:
        self.strategy: LeastConnections[str] = LeastConnections()
        self.scheduler, self.record = make(window=16, queueLimit=64, strategy=self.strategy)
        for worker in "ab":
            self.scheduler.addWorker(worker)

    def accept(self, *fds: int) -> list[str]:
        before = len(self.record.sent)
        for fd in fds:
            self.scheduler.connectionAccepted(fd)
        for worker, fd in self.record.sent[before:]:
            self.scheduler.answered(worker, fd, True)
        return [worker for worker, _ in self.record.sent[before:]]

    def test_evenWhileEqual(self) -> None:
        """
        Among equals, the one that has waited longest: like rr.
        """
        self.assertEqual(self.accept(1, 2, 3, 4), list("abab"))
        self.assertEqual((self.strategy.live("a"), self.strategy.live("b")), (2, 2))

    def test_fillsTheEmptierWorker(self) -> None:
        """
        Once a worker's connections end, it gets the new ones until it has as
        many as the others.
        """
        self.accept(1, 2, 3, 4)
        self.scheduler.connectionsClosed("a", 2)
        self.assertEqual(self.accept(5, 6, 7, 8), list("aaba"))
        self.assertEqual((self.strategy.live("a"), self.strategy.live("b")), (3, 3))

    def test_unackedCount(self) -> None:
        """
        A burst does not all go to the emptiest worker: a hand-off counts as
        soon as it is sent, before the ack.
        """
        self.scheduler.connectionAccepted(1)
        self.scheduler.connectionAccepted(2)
        self.assertEqual([w for w, _ in self.record.sent], ["a", "b"])

    def test_refusedDoesNotCount(self) -> None:
        self.scheduler.connectionAccepted(1)
        self.scheduler.answered("a", 1, False)
        self.assertEqual(self.record.sent, [("a", 1), ("b", 1)])
        self.assertEqual((self.strategy.live("a"), self.strategy.live("b")), (0, 1))

    def test_fullWindowSkipped(self) -> None:
        """
        The emptiest worker is skipped while its window is full.
        """
        scheduler, record = make(window=1, strategy=LeastConnections())
        scheduler.addWorker("a")
        scheduler.addWorker("b")
        scheduler.connectionAccepted(1)
        scheduler.connectionsClosed("a", 1)  # a looks empty, but has not acked
        scheduler.connectionAccepted(2)
        scheduler.connectionAccepted(3)
        self.assertEqual(record.sent, [("a", 1), ("b", 2)])
        self.assertEqual(scheduler.waiting(), 1)

    def test_goneWorkerForgotten(self) -> None:
        """
        A worker that dies is forgotten; its unacked hand-offs count for the
        worker that takes them; stale reports about it change nothing.
        """
        self.scheduler.connectionAccepted(1)
        self.scheduler.removeWorker("a")
        self.assertEqual(self.record.sent, [("a", 1), ("b", 1)])
        self.scheduler.connectionsClosed("a", 5)
        self.assertEqual((self.strategy.live("a"), self.strategy.live("b")), (0, 1))

    def test_neverNegative(self) -> None:
        self.accept(1)
        self.scheduler.connectionsClosed("a", 3)
        self.assertEqual(self.strategy.live("a"), 0)

    def test_busyWorkerSkipped(self) -> None:
        """
        Between two workers with as many live connections, the one that has
        not acked its last hand-off (busy: a worker spinning in a slow
        request cannot ack) is passed over, whatever its turn.
        """
        self.scheduler.connectionAccepted(1)
        self.scheduler.connectionAccepted(2)
        self.assertEqual(self.record.sent, [("a", 1), ("b", 2)])
        self.scheduler.answered("b", 2, True)
        self.scheduler.connectionAccepted(3)
        self.assertEqual(self.record.sent[2:], [("b", 3)])

    def test_allBusyFallBackToFewestLive(self) -> None:
        """
        When every worker has an unacked hand-off, the live counts decide as
        before, and among equals the turn.
        """
        self.scheduler.connectionAccepted(1)
        self.scheduler.connectionAccepted(2)
        self.scheduler.connectionAccepted(3)
        self.assertEqual([w for w, _ in self.record.sent], list("aba"))

    def test_fewerLiveBeatsAcked(self) -> None:
        """
        An unacked hand-off only breaks ties: a busy worker with fewer live
        connections still gets the next one.
        """
        self.accept(1, 2, 3, 4)
        self.scheduler.connectionsClosed("a", 2)
        self.scheduler.connectionAccepted(5)
        self.assertEqual(self.record.sent[-1], ("a", 5))
        self.scheduler.connectionAccepted(6)
        self.assertEqual(self.record.sent[-1], ("a", 6))

    def test_busyWorkerLostItsHandOffsGoToTheOther(self) -> None:
        """
        A busy worker (its hand-offs unacked) that dies gives them back, and
        they go to the other worker ahead of newer connections.
        """
        self.scheduler.connectionAccepted(1)
        self.scheduler.connectionAccepted(2)
        self.scheduler.answered("b", 2, True)
        self.scheduler.connectionAccepted(3)
        self.scheduler.removeWorker("b")
        self.assertEqual(self.record.sent[-1], ("a", 3))
        self.scheduler.answered("a", 1, True)
        self.scheduler.answered("a", 3, True)
        self.assertTrue(self.scheduler.idle)

    def test_refusedByEveryWorkerWhileBusyIsClosed(self) -> None:
        """
        A connection that each worker refuses is closed, the tie-break on
        unacked hand-offs notwithstanding, and counts as live on neither.
        """
        self.scheduler.connectionAccepted(1)
        for _ in range(3):
            self.scheduler.answered(self.record.sent[-1][0], 1, False)
        self.assertEqual(self.record.closed, [1])
        self.assertEqual({w for w, _ in self.record.sent}, {"a", "b"})
        self.assertEqual((self.strategy.live("a"), self.strategy.live("b")), (0, 0))
