"""
L{HandOffHandle} with real sockets and a fake worker channel: what happens
to a socket after each kind of answer, or none.
"""

from __future__ import annotations

import os
import socket
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionLost
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import LogLevel, capturedLogs
from twisted.protocols import amp
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from twistcluster._common.endpoints import ListenSpec
from twistcluster._common.protocol import ControlChannel
from twistcluster._master.handoff import OUT_OF_DESCRIPTORS_PAUSE, HandOffHandle


class FakeWorker:
    def __init__(self, id: int) -> None:
        self.id = id
        self.calls: list[tuple[list[int], Deferred[dict[str, Any]]]] = []
        self.taken = 0
        self.connectionsRefused = 0

    def connectionTaken(self) -> None:
        self.taken += 1

    def callRemote(self, command: type, **kwargs: Any) -> Deferred[dict[str, Any]]:
        d: Deferred[dict[str, Any]] = Deferred()
        self.calls.append((list(kwargs["fds"]), d))
        return d


class HandOffHandleTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.closed: list[int] = []
        self.handle = HandOffHandle(
            self.reactor, "k", ListenSpec.forTCP(0, interface="127.0.0.1"), close=self.closed.append
        )
        self.addCleanup(self.handle.closeNow)
        self.clients: list[socket.socket] = []
        self.addCleanup(lambda: [c.close() for c in self.clients])
        self.one, self.two = FakeWorker(1), FakeWorker(2)
        self.handle.add(self.one)
        self.handle.add(self.two)

    def accept(self, count: int = 1) -> None:
        for _ in range(count):
            self.clients.append(socket.create_connection(("127.0.0.1", self.handle.sockname["port"])))
        self.handle._port.doRead()  # type: ignore[attr-defined]
        self.reactor.advance(0)

    def tearDown(self) -> None:
        for fd in self.handle.scheduler._queue:
            os.close(fd)
        for worker in (self.one, self.two):
            for fd in self.handle.scheduler._inFlight.get(worker, ()):
                os.close(fd)

    def test_outOfDescriptors(self) -> None:
        """
        A worker that could not take a socket for want of descriptors: the
        socket goes to the other worker, and that worker gets nothing for a
        moment, then its turn again.
        """
        self.accept()
        [(fds, answer)] = self.one.calls
        answer.callback({"accepted": [False], "outOfDescriptors": True})
        self.reactor.advance(0)
        self.assertEqual([c[0] for c in self.two.calls], [fds])
        self.two.calls[0][1].callback({"accepted": [True]})
        self.assertEqual(self.closed, fds)
        self.accept(2)
        self.assertEqual(len(self.one.calls), 1)
        self.assertEqual(len(self.two.calls), 2)
        self.reactor.advance(OUT_OF_DESCRIPTORS_PAUSE)
        self.accept(2)
        self.assertEqual(len(self.one.calls), 2)

    def test_lostChannelKeepsTheSocketsUntilTheWorkerIsGone(self) -> None:
        """
        The channel closed with a hand-off unanswered: the socket stays that
        worker's (its process may still read it) until it is gone.
        """
        self.accept()
        [(fds, answer)] = self.one.calls
        self.handle.retire(self.one)
        answer.errback(Failure(ConnectionLost()))
        self.reactor.advance(0)
        self.assertEqual(self.two.calls, [])
        self.handle.remove(self.one)
        self.reactor.advance(0)
        self.assertEqual([c[0] for c in self.two.calls], [fds])

    def test_channelClosedAsTheHandOffIsSent(self) -> None:
        """
        A hand-off to a worker whose channel has just closed (the real
        channel's C{callRemote} raises L{ConnectionLost} as it queues the
        descriptors): no failure or warning is logged, and the socket stays
        that worker's until it is gone, then goes to another (issue 13, 7: a
        C{'NoneType' ... sendFileDescriptor} traceback).
        """
        self.one.callRemote = ControlChannel().callRemote  # type: ignore[method-assign]
        with capturedLogs() as events:
            self.accept()
            self.assertEqual(self.two.calls, [])
            self.handle.retire(self.one)
            self.handle.remove(self.one)
            self.reactor.advance(0)
        self.assertEqual(len(self.two.calls), 1)
        loud = (LogLevel.warn, LogLevel.error, LogLevel.critical)
        self.assertEqual([e for e in events if e["log_level"] in loud or "log_failure" in e], [])

    def test_errorAnswerIsNoAnswer(self) -> None:
        self.accept()
        [(fds, answer)] = self.one.calls
        answer.errback(Failure(amp.RemoteAmpError(b"X", "no")))
        self.reactor.advance(0)
        self.assertEqual(self.two.calls, [])
        self.assertIsNotNone(self.handle.oldestUnanswered(self.one))

    def test_oldestUnanswered(self) -> None:
        self.assertIsNone(self.handle.oldestUnanswered(self.one))
        self.reactor.advance(5)
        self.accept()
        self.reactor.advance(3)
        self.accept(2)
        self.assertEqual(self.handle.oldestUnanswered(self.one), 5)
        self.one.calls[0][1].callback({"accepted": [True]})
        self.assertEqual(self.handle.oldestUnanswered(self.one), 8)
        self.one.calls[1][1].callback({"accepted": [True]})
        self.assertIsNone(self.handle.oldestUnanswered(self.one))

    def test_shortAnswerLeavesTheRestInFlight(self) -> None:
        """
        An answer that covers fewer sockets than were handed over: the rest
        stay in flight, unanswered.
        """
        self.handle.remove(self.two)
        self.accept(3)
        [(fds, answer)] = self.one.calls
        self.assertEqual(len(fds), 3)
        answer.callback({"accepted": [True]})
        self.assertEqual(self.closed, fds[:1])
        self.assertEqual(self.handle.scheduler.inFlight(self.one), 2)

    def test_aPassOfTheAcceptLoopSendsAtItsEnd(self) -> None:
        """
        The connections one pass of the accept loop takes go out when the
        pass ends, one box per worker, with no turn of the reactor.
        """
        for _ in range(3):
            self.clients.append(socket.create_connection(("127.0.0.1", self.handle.sockname["port"])))
        self.handle._port.doRead()  # type: ignore[attr-defined]
        self.assertEqual([len(fds) for fds, _ in self.one.calls], [2])
        self.assertEqual([len(fds) for fds, _ in self.two.calls], [1])
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_anAnswerSendsWhatItMadeRoomFor(self) -> None:
        """
        Sockets that waited for room in a worker's window go out as soon as
        its answer makes room, in one box, with no turn of the reactor.
        """
        self.handle.remove(self.two)
        window = self.handle.scheduler.window
        self.accept(window + 3)
        [(fds, answer)] = self.one.calls
        self.assertEqual(len(fds), window)
        self.assertEqual(self.handle.scheduler.waiting(), 3)
        answer.callback({"accepted": [True] * window})
        self.assertEqual([len(fds) for fds, _ in self.one.calls], [window, 3])
        self.assertEqual(self.reactor.getDelayedCalls(), [])
