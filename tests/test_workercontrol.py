"""
The worker's short path for C{NewConn} (L{WorkerControl}): the same answer
bytes as AMP's responder, the answers of one read in one write ahead of
whatever else the read answers, AMP's way for any other box, and the
worker's channel transport writing at once.
"""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Factory
from twisted.internet.testing import MemoryReactorClock
from twisted.protocols import amp
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from twistcluster._common.protocol import ControlChannel, NewConn, Ping, adoptWorkerChannel
from twistcluster._worker.control import WorkerControl


class FakeTransport:
    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.lost = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def sendFileDescriptor(self, fd: int) -> None:
        pass

    def loseConnection(self) -> None:
        self.lost = True


class FakeIntake:
    def __init__(self, answers: list[dict[str, Any]]) -> None:
        self.answers = answers
        self.taken: list[tuple[str, list[int | None]]] = []

    def take(self, key: str, fds: list[int | None]) -> dict[str, Any]:
        self.taken.append((key, fds))
        return self.answers.pop(0)


class FakeRuntime:
    def __init__(self, answers: list[dict[str, Any]]) -> None:
        self.intake = FakeIntake(answers)


class AMPsWay(ControlChannel):
    """
    What AMP's own responder answers (the worker's end before the short path).
    """

    def __init__(self, answers: list[dict[str, Any]]) -> None:
        super().__init__()
        self.answers = answers

    @NewConn.responder
    def newConn(self, key: str, fds: list[int | None]) -> dict[str, Any]:
        return self.answers.pop(0)


def connected(channel: amp.AMP) -> FakeTransport:
    transport = FakeTransport()
    channel.makeConnection(transport)  # type: ignore[arg-type]
    return transport


def asked(*commands: tuple[type[amp.Command], dict[str, Any]]) -> bytes:
    """
    The bytes a master's channel sends for C{commands} (no descriptors).
    """
    master = ControlChannel()
    transport = connected(master)
    for command, arguments in commands:
        master.callRemote(command, **arguments)
    return b"".join(transport.written)


ANSWERS = [
    {"accepted": [True, False, True]},
    {"accepted": [False], "outOfDescriptors": True},
    {"accepted": []},
]


class WorkerControlTests(SynchronousTestCase):
    def test_theSameAnswerAsAMPs(self) -> None:
        """
        Each answer is, byte for byte, the one AMP's responder sends.
        """
        data = asked(*[(NewConn, {"key": "tcp:80:é", "fds": []})] * len(ANSWERS))
        ours = WorkerControl(FakeRuntime(list(ANSWERS)))  # type: ignore[arg-type]
        theirs = AMPsWay(list(ANSWERS))
        ourTransport, theirTransport = connected(ours), connected(theirs)
        ours.dataReceived(data)
        theirs.dataReceived(data)
        self.assertEqual(b"".join(ourTransport.written), b"".join(theirTransport.written))
        self.assertEqual(len(ourTransport.written), 1)
        runtime: Any = ours._runtime
        self.assertEqual([key for key, _ in runtime.intake.taken], ["tcp:80:é"] * 3)

    def test_answersAheadOfWhatAMPAnswers(self) -> None:
        """
        The answers of a read's hand-offs are written before the answer to
        a later box of the same read that takes AMP's way (a ping sent after
        a hand-off is answered after it).
        """
        data = asked((NewConn, {"key": "k", "fds": []}), (Ping, {}), (NewConn, {"key": "k", "fds": []}))
        channel = WorkerControl(FakeRuntime([{"accepted": [True]}, {"accepted": [False]}]))  # type: ignore[arg-type]
        transport = connected(channel)
        channel.dataReceived(data)
        tags = [next(iter(amp.parseString(written)))[b"_answer"] for written in transport.written]
        self.assertEqual(tags, [b"1", b"2", b"3"])

    def test_anOddBoxTakesAMPsWay(self) -> None:
        """
        A C{NewConn} box with a key the short path does not know is AMP's to
        judge: answered by the responder as before.
        """
        box = amp.AmpBox({b"_ask": b"9", b"_command": b"newconn", b"fds": b"", b"key": b"k", b"extra": b"x"})
        channel = WorkerControl(FakeRuntime([{"accepted": []}]))  # type: ignore[arg-type]
        transport = connected(channel)
        channel.dataReceived(box.serialize())
        self.assertEqual(
            b"".join(transport.written), amp.AmpBox({b"_answer": b"9", b"accepted": b""}).serialize()
        )

    def test_anUnexpectedErrorEndsTheChannelAsAMPDoes(self) -> None:
        """
        The intake failing unexpectedly: logged, an error answer, and the
        channel closed, as AMP does for a responder's unexpected error.
        """
        runtime = FakeRuntime([])
        channel = WorkerControl(runtime)  # type: ignore[arg-type]
        transport = connected(channel)
        channel.dataReceived(asked((NewConn, {"key": "k", "fds": []})))
        [answer] = amp.parseString(b"".join(transport.written))
        self.assertEqual(answer[b"_error"], b"1")
        self.assertEqual(answer[b"_error_code"], amp.UNKNOWN_ERROR_CODE)
        self.assertTrue(transport.lost)
        self.assertEqual(len(self.flushLoggedErrors(IndexError)), 1)


class WriteAtOnceTests(SynchronousTestCase):
    def test_sentAtOnceOrQueued(self) -> None:
        """
        The worker's channel transport sends at once when nothing waits; when
        the socket is full the rest waits for the reactor, in order.
        """
        ours, theirs = socket.socketpair()
        self.addCleanup(theirs.close)
        reactor = MemoryReactorClock()
        transport: Any = adoptWorkerChannel(reactor, ours.fileno(), Factory.forProtocol(ControlChannel))
        ours.close()
        self.addCleanup(transport.connectionLost, Failure(ConnectionDone()))
        transport.writeAtOnce(b"first")
        self.assertNotIn(transport, reactor.getWriters())
        self.assertEqual(theirs.recv(100), b"first")
        big = b"x" * (8 * 1024 * 1024)
        transport.writeAtOnce(big)
        transport.writeAtOnce(b"last")
        self.assertIn(transport, reactor.getWriters())
        theirs.setblocking(False)
        received = b""
        while len(received) < len(big) + 4:
            try:
                received += theirs.recv(1 << 20)
            except BlockingIOError:
                transport.doWrite()
        self.assertEqual(received, big + b"last")
