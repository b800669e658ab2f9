"""
The connections a worker serves (L{twistcluster._worker.tracking}): each
wait for the last one's end is its own.
"""

from __future__ import annotations

from types import SimpleNamespace

from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from twistcluster._worker.tracking import ClosedConnectionReports, OpenConnections


class WhenAllClosedTests(SynchronousTestCase):
    def test_eachWaiterIsItsOwn(self) -> None:
        """
        One waiter giving up (its timeout cancels its Deferred) leaves
        another waiting, which fires as the last connection ends.
        """
        clock = Clock()
        opened = OpenConnections(ClosedConnectionReports(clock, lambda *a, **k: None))
        connection = Protocol()
        opened.opened(SimpleNamespace(reportClosed=False, key=None), connection)
        patient = opened.whenAllClosed()
        gaveUp = opened.whenAllClosed().addTimeout(1, clock, lambda *a: "gave up")
        clock.advance(1)
        self.assertEqual(self.successResultOf(gaveUp), "gave up")
        self.assertNoResult(patient)
        connection.connectionLost(Failure(ConnectionDone()))
        self.assertIsNone(self.successResultOf(patient))


class ClosedConnectionReportsTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.sent: list[dict[str, object]] = []
        self.opened = OpenConnections(
            ClosedConnectionReports(self.clock, lambda command, **kw: self.sent.append(kw))
        )
        self.port = SimpleNamespace(reportClosed=True, key="k")

    def open(self) -> Protocol:
        connection = Protocol()
        self.opened.opened(self.port, connection)
        return connection

    def test_batchedWhileOthersAreOpen(self) -> None:
        """
        Ends are reported in one batch per interval while the worker still
        serves other connections.
        """
        first, second = self.open(), self.open()
        self.open()  # still open: the worker is not idle
        first.connectionLost(Failure(ConnectionDone()))
        second.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.sent, [])
        self.clock.advance(0.05)
        self.assertEqual(self.sent, [{"key": "k", "count": 2}])

    def test_lastEndReportedAtOnce(self) -> None:
        """
        When the worker's last open connection ends it is idle: the batch so
        far goes at once (the master's least-conn counts it idle now), and
        no timer is left behind.
        """
        first, second = self.open(), self.open()
        first.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.sent, [])
        second.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.sent, [{"key": "k", "count": 2}])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_promptReportsAtMostEveryGap(self) -> None:
        """
        A worker idle again within C{promptGap} of its last report says so
        when the gap is over, not a whole interval later (a box per idle
        moment cost the master too much under many short connections).
        """
        self.open().connectionLost(Failure(ConnectionDone()))
        self.assertEqual(len(self.sent), 1)
        self.clock.advance(0.001)
        self.open().connectionLost(Failure(ConnectionDone()))
        self.assertEqual(len(self.sent), 1)
        self.clock.advance(0.004)
        self.assertEqual(self.sent, [{"key": "k", "count": 1}, {"key": "k", "count": 1}])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_idleBringsABatchForward(self) -> None:
        """
        A batch waiting for its interval goes at the end of the gap once the
        worker becomes idle.
        """
        self.open().connectionLost(Failure(ConnectionDone()))
        other, last = self.open(), self.open()
        other.connectionLost(Failure(ConnectionDone()))
        last.connectionLost(Failure(ConnectionDone()))
        self.clock.advance(0.005)
        self.assertEqual(self.sent, [{"key": "k", "count": 1}, {"key": "k", "count": 2}])
