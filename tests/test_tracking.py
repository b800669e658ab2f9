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
