"""
The hand-off scheduler's rules, with each pick strategy, without I/O.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from twistcluster._master.scheduling import HandOffScheduler


class Recorder:
    def __init__(self) -> None:
        self.sent: list[tuple[str, int]] = []
        self.closed: list[int] = []


def make(
    window: int = 2, queueLimit: int = 4, strategy: object = None
) -> tuple[HandOffScheduler[str], Recorder]:
    record = Recorder()
    scheduler: HandOffScheduler[str] = HandOffScheduler(
        lambda worker, fd: record.sent.append((worker, fd)),
        record.closed.append,
        window=window,
        queueLimit=queueLimit,
    )
    if strategy is not None:
        scheduler.strategy = strategy  # type: ignore[assignment]
    return scheduler, record


class HandOffSchedulerTests(SynchronousTestCase):
    def test_turns(self) -> None:
        """
        Connections go to the workers in turn.
        """
        scheduler, record = make(window=16)
        for worker in "abc":
            scheduler.addWorker(worker)
        for fd in range(6):
            scheduler.connectionAccepted(fd)
        self.assertEqual([w for w, _ in record.sent], list("abcabc"))

    def test_closesOnlyAfterAck(self) -> None:
        """
        The master's copy is closed when the worker accepts, not before.
        """
        scheduler, record = make()
        scheduler.addWorker("a")
        scheduler.connectionAccepted(7)
        self.assertEqual(record.closed, [])
        scheduler.answered("a", 7, True)
        self.assertEqual(record.closed, [7])
        self.assertTrue(scheduler.idle)

    def test_window(self) -> None:
        """
        A worker with a full window of unacked hand-offs gets nothing more;
        connections wait in the queue until it acks.
        """
        scheduler, record = make(window=2)
        scheduler.addWorker("a")
        for fd in range(4):
            scheduler.connectionAccepted(fd)
        self.assertEqual(record.sent, [("a", 0), ("a", 1)])
        self.assertEqual(scheduler.waiting(), 2)
        scheduler.answered("a", 0, True)
        self.assertEqual(record.sent[-1], ("a", 2))
        self.assertEqual(scheduler.waiting(), 1)

    def test_saturatedWorkerSkipped(self) -> None:
        """
        A worker that is not acking (blocked) is skipped; others carry on.
        """
        scheduler, record = make(window=1)
        scheduler.addWorker("slow")
        scheduler.addWorker("fast")
        for fd in range(5):
            scheduler.connectionAccepted(fd)
            for worker, sent in list(record.sent):
                if worker == "fast":
                    scheduler.answered("fast", sent, True)
        self.assertEqual([fd for w, fd in record.sent if w == "slow"], [0])
        self.assertEqual([fd for w, fd in record.sent if w == "fast"], [1, 2, 3, 4])

    def test_refusedGoesToAnotherWorker(self) -> None:
        scheduler, record = make()
        scheduler.addWorker("a")
        scheduler.addWorker("b")
        scheduler.connectionAccepted(5)
        scheduler.answered("a", 5, False)
        self.assertEqual(record.sent, [("a", 5), ("b", 5)])
        self.assertEqual(record.closed, [])

    def test_refusedByEveryWorkerIsClosed(self) -> None:
        """
        A connection every worker refuses is closed, not bounced forever.
        """
        scheduler, record = make()
        scheduler.addWorker("a")
        scheduler.addWorker("b")
        scheduler.connectionAccepted(5)
        for _ in range(10):
            if record.closed:
                break
            worker, fd = record.sent[-1]
            scheduler.answered(worker, fd, False)
        self.assertEqual(record.closed, [5])
        self.assertLessEqual(len(record.sent), 3)

    def test_deadWorkersHandOffsGoToOthersFirst(self) -> None:
        """
        A worker's unacked hand-offs go to other workers when it dies, ahead
        of newer connections; its late answers are ignored.
        """
        scheduler, record = make(window=4)
        scheduler.addWorker("a")
        scheduler.connectionAccepted(1)
        scheduler.connectionAccepted(2)
        scheduler.removeWorker("a")
        scheduler.connectionAccepted(3)
        scheduler.addWorker("b")
        self.assertEqual(record.sent[2:], [("b", 1), ("b", 2), ("b", 3)])
        scheduler.answered("a", 1, True)
        self.assertEqual(record.closed, [])

    def test_retiredWorkerGetsNothingNew(self) -> None:
        """
        A worker that closed its server gets no new connection, but its
        in-flight hand-offs are still answered.
        """
        scheduler, record = make(window=4)
        scheduler.addWorker("a")
        scheduler.addWorker("b")
        scheduler.connectionAccepted(1)
        scheduler.retireWorker("a")
        scheduler.connectionAccepted(2)
        scheduler.connectionAccepted(3)
        self.assertEqual(record.sent, [("a", 1), ("b", 2), ("b", 3)])
        scheduler.answered("a", 1, False)
        self.assertEqual(record.sent[-1], ("b", 1))
        self.assertEqual(scheduler.workers, ["b"])

    def test_listeningAgainAfterRetiring(self) -> None:
        """
        A worker that closed its server and listens again (same key) is back
        in rotation, with its earlier hand-offs still accounted for.
        """
        scheduler, record = make(window=4)
        scheduler.addWorker("a")
        scheduler.connectionAccepted(1)
        scheduler.retireWorker("a")
        scheduler.addWorker("a")
        scheduler.connectionAccepted(2)
        self.assertEqual(record.sent, [("a", 1), ("a", 2)])
        self.assertEqual(scheduler.inFlight("a"), 2)
        scheduler.answered("a", 1, True)
        self.assertEqual(record.closed, [1])

    def test_fullWhenQueueReachesLimit(self) -> None:
        scheduler, _ = make(queueLimit=3)
        for fd in range(3):
            self.assertFalse(scheduler.full)
            scheduler.connectionAccepted(fd)
        self.assertTrue(scheduler.full)
        scheduler.addWorker("a")
        self.assertFalse(scheduler.full)

    def test_handOffFailingAtOnce(self) -> None:
        """
        A hand-off that fails synchronously (the worker's channel is already
        gone) re-enters the scheduler safely: the socket goes elsewhere.
        """
        sent: list[tuple[str, int]] = []
        scheduler: HandOffScheduler[str]

        def handOff(worker: str, fd: int) -> None:
            sent.append((worker, fd))
            if worker == "gone":
                scheduler.removeWorker("gone")

        scheduler = HandOffScheduler(handOff, lambda fd: None, window=4)
        scheduler.addWorker("gone")
        scheduler.addWorker("ok")
        scheduler.connectionAccepted(9)
        self.assertEqual(sent, [("gone", 9), ("ok", 9)])

    def test_closeAllForgetsRefusals(self) -> None:
        """
        A refused socket closed at shutdown leaves no refusal count behind
        for the next socket that gets its descriptor number.
        """
        scheduler, record = make(window=1)
        scheduler.addWorker("a")
        scheduler.connectionAccepted(5)
        scheduler.retireWorker("a")
        scheduler.answered("a", 5, False)
        self.assertEqual(scheduler.waiting(), 1)
        scheduler.closeAll()
        self.assertEqual(record.closed, [5])
        self.assertEqual(scheduler._refusals, {})

    def test_closeAll(self) -> None:
        scheduler, record = make()
        scheduler.connectionAccepted(1)
        scheduler.connectionAccepted(2)
        scheduler.closeAll()
        self.assertEqual(record.closed, [1, 2])
        self.assertTrue(scheduler.idle)


class PauseTests(SynchronousTestCase):
    def test_pausedWorkerSkipped(self) -> None:
        """
        A paused worker (out of descriptors) gets nothing new; what it
        refuses for want of descriptors goes back to the head of the queue
        without counting as a refusal, to the next worker; once resumed it
        takes its turn again.
        """
        scheduler, record = make(window=4, queueLimit=16)
        scheduler.addWorker("a")
        scheduler.addWorker("b")
        scheduler.connectionAccepted(1)
        scheduler.pauseWorker("a")
        scheduler.answered("a", 1, False, retry=True)
        for fd in (2, 3):
            scheduler.connectionAccepted(fd)
        self.assertEqual(record.sent, [("a", 1), ("b", 1), ("b", 2), ("b", 3)])
        scheduler.resumeWorker("a")
        scheduler.connectionAccepted(4)
        scheduler.connectionAccepted(5)
        self.assertEqual(record.sent[-2:], [("b", 4), ("a", 5)])

    def test_retriedRefusalsNeverClose(self) -> None:
        """
        However often every worker refuses a socket for want of
        descriptors, the master keeps it (only real refusals by every worker
        close it).
        """
        scheduler, record = make(window=4, queueLimit=16)
        scheduler.addWorker("a")
        scheduler.connectionAccepted(1)
        for _ in range(10):
            scheduler.pauseWorker("a")
            scheduler.answered("a", 1, False, retry=True)
            scheduler.resumeWorker("a")
        self.assertEqual(record.closed, [])
        self.assertEqual(scheduler.inFlight("a"), 1)

    def test_pausedThenRemoved(self) -> None:
        scheduler, record = make(window=4)
        scheduler.addWorker("a")
        scheduler.pauseWorker("a")
        scheduler.removeWorker("a")
        scheduler.resumeWorker("a")
        scheduler.connectionAccepted(1)
        self.assertEqual(record.sent, [])
