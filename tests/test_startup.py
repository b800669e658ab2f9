"""
When a command-line worker is ready (twistcluster._worker.startup): its
listens are announced to the master only once every listen of its start is
granted; a refusal fails the start and nothing is ever announced.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.internet.error import CannotListenError
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from twistcluster._common.events import Latch
from twistcluster._worker.startup import Startup


class FakePort:
    def __init__(self, name: str) -> None:
        self.name = name
        self.closed = False
        self._listening: Latch[FakePort] = Latch()

    def whenListening(self) -> Deferred[FakePort]:
        return self._listening.wait()

    def grant(self, startup: Startup[FakePort]) -> None:
        # As a ClusterPort: the runtime hears first, then its waiters.
        startup.granted(self)
        self._listening.fire(self)

    def refuse(self, startup: Startup[FakePort]) -> Failure:
        reason = Failure(CannotListenError("127.0.0.1", 53, OSError(98, "Address already in use")))
        error = reason.value
        assert error is not None
        self.closed = True
        startup.refused(reason)
        self._listening.fail(lambda: error)
        return reason


class StartupTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.announced: list[str] = []
        self.failures: list[Failure] = []
        self.startup: Startup[FakePort] = Startup(
            lambda port: self.announced.append(port.name), self.failures.append
        )

    def test_announcedOnceEveryListenIsGranted(self) -> None:
        udp, tcp = FakePort("udp"), FakePort("tcp")
        udp.grant(self.startup)
        self.startup.finish([udp, tcp])
        self.assertEqual(self.announced, [])
        tcp.grant(self.startup)
        self.assertEqual(self.announced, ["udp", "tcp"])
        late = FakePort("late")
        self.assertFalse(self.startup.granted(late))
        self.assertEqual(self.failures, [])

    def test_aRefusalFailsTheStartAndNothingIsAnnounced(self) -> None:
        """
        dns with its TCP port taken: the TCP refusal fails the start once;
        the UDP listen granted after it is never announced (the master would
        take the worker for ready).
        """
        udp, tcp = FakePort("udp"), FakePort("tcp")
        self.startup.finish([udp, tcp])
        tcp.refuse(self.startup)
        udp.grant(self.startup)
        self.assertEqual(self.announced, [])
        self.assertEqual(len(self.failures), 1)
        self.failures[0].trap(CannotListenError)

    def test_refusedBeforeTheStartEnded(self) -> None:
        tcp = FakePort("tcp")
        reason = tcp.refuse(self.startup)
        self.startup.finish([])
        self.assertEqual(self.failures, [reason])

    def test_aListenClosedMeanwhileIsNotAnnounced(self) -> None:
        kept, closed = FakePort("kept"), FakePort("closed")
        kept.grant(self.startup)
        closed.grant(self.startup)
        closed.closed = True
        self.startup.finish([kept])
        self.assertEqual(self.announced, ["kept"])
