"""
The master's short path for C{NewConn} (L{HandOffChannel}): the same bytes
as C{callRemote(NewConn)} on the wire, the same answers and failures to the
hand-off's callbacks, and AMP's own way for every other box; and on the
master's channel transport, a box sent at once when nothing waits.
"""

from __future__ import annotations

import os
import socket
import sys
from typing import Any

from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.protocol import Factory
from twisted.internet.testing import MemoryReactorClock
from twisted.protocols import amp
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from twistcluster._common.protocol import ControlChannel, Listening, NewConn, adoptControlChannel
from twistcluster._master.handoffchannel import HandOffChannel


class FakeTransport:
    """
    Enough of a UNIX transport for a channel: what it writes, the
    descriptors it queues.
    """

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.descriptors: list[int] = []
        self.lost = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def sendFileDescriptor(self, fd: int) -> None:
        self.descriptors.append(fd)

    def loseConnection(self) -> None:
        self.lost = True


class Recorder(HandOffChannel):
    def __init__(self) -> None:
        super().__init__()
        self.listening: list[str] = []

    @Listening.responder
    def listeningOn(self, key: str, address: Any) -> dict[str, Any]:
        self.listening.append(key)
        return {}


def connected(channel: amp.AMP) -> FakeTransport:
    transport = FakeTransport()
    channel.makeConnection(transport)  # type: ignore[arg-type]
    return transport


def answerBox(tag: bytes, **values: Any) -> bytes:
    strings = NewConn.makeResponse(values, None)
    strings[b"_answer"] = tag
    return strings.serialize()


class Outcomes:
    def __init__(self) -> None:
        self.answers: list[tuple[Any, ...]] = []
        self.failures: list[tuple[Failure, tuple[Any, ...]]] = []

    def answered(self, answer: dict[str, Any], *args: Any) -> None:
        self.answers.append((answer, *args))

    def failed(self, reason: Failure, *args: Any) -> None:
        self.failures.append((reason, args))


ODD_ANSWERS = [
    # An error answer: AMP's, as callRemote would raise it.
    (
        amp.AmpBox({b"_error": b"1", b"_error_code": b"WHAT", b"_error_description": b"no"}).serialize(),
        amp.UnknownRemoteError,
    ),
    # A malformed list of booleans.
    (amp.AmpBox({b"_answer": b"1", b"accepted": b"\x00\x03Yes"}).serialize(), TypeError),
    # No accepted at all.
    (amp.AmpBox({b"_answer": b"1"}).serialize(), KeyError),
]


class HandOffChannelTests(SynchronousTestCase):
    def test_theSameBytesAsCallRemote(self) -> None:
        """
        A hand-off box is the box C{callRemote(NewConn)} sends, and its
        descriptors are queued the same way.
        """
        ours, theirs = Recorder(), ControlChannel()
        ourTransport, theirTransport = connected(ours), connected(theirs)
        ours.sendNewConn("tcp:80:é".encode(), [7, 8, 9], Outcomes().answered, Outcomes().failed)
        theirs.callRemote(NewConn, key="tcp:80:é", fds=[7, 8, 9])
        assert ourTransport.written == theirTransport.written
        assert ourTransport.descriptors == theirTransport.descriptors == [7, 8, 9]

    def test_anAckGoesStraightToTheCallback(self) -> None:
        """
        The usual answer, in pieces of any size and several in one read, calls
        the hand-off's callback with the answer callRemote would give, and its
        arguments.
        """
        for size in (1, 3, 1000):
            channel = Recorder()
            connected(channel)
            outcomes = Outcomes()
            channel.sendNewConn(b"k", [1, 2, 3], outcomes.answered, outcomes.failed, "worker", [1, 2, 3])
            channel.sendNewConn(b"k", [4], outcomes.answered, outcomes.failed, "worker", [4])
            assert channel.handOffsInFlight() == 2
            data = answerBox(b"1", accepted=[True, False, True]) + answerBox(b"2", accepted=[True])
            for at in range(0, len(data), size):
                channel.dataReceived(data[at : at + size])
            absent = {name.decode(): None for name, _ in NewConn.response if name != b"accepted"}
            assert outcomes.answers == [
                ({"accepted": [True, False, True], **absent}, "worker", [1, 2, 3]),
                ({"accepted": [True], **absent}, "worker", [4]),
            ]
            assert outcomes.failures == []
            assert channel.handOffsInFlight() == 0

    def test_optionalFlagsInTheAck(self) -> None:
        """
        NewConn's optional flags come as callRemote gives them: L{None} when
        absent, a boolean when present.
        """
        flags = [name.decode() for name, argument in NewConn.response if name != b"accepted"]
        channel = Recorder()
        connected(channel)
        outcomes = Outcomes()
        channel.sendNewConn(b"k", [1], outcomes.answered, outcomes.failed)
        channel.dataReceived(answerBox(b"1", accepted=[False], **{name: True for name in flags}))
        assert outcomes.answers == [({"accepted": [False], **{name: True for name in flags}},)]
        outcomes.answers.clear()
        channel.sendNewConn(b"k", [1], outcomes.answered, outcomes.failed)
        channel.dataReceived(answerBox(b"2", accepted=[True]))
        assert outcomes.answers == [({"accepted": [True], **{name: None for name in flags}},)]

    def test_anOddAnswerTakesAmpsWay(self) -> None:
        """
        An answer to a hand-off that is not of the usual shape fails the
        hand-off as callRemote(NewConn) would fail, and the channel stays up.
        """
        for box, error in ODD_ANSWERS:
            channel = Recorder()
            transport = connected(channel)
            outcomes = Outcomes()
            channel.sendNewConn(b"k", [1], outcomes.answered, outcomes.failed, "w")
            channel.dataReceived(box)
            assert outcomes.answers == []
            [(reason, args)] = outcomes.failures
            assert reason.check(error), reason
            assert args == ("w",)
            assert not transport.lost

    def test_otherBoxesTakeAmpsWay(self) -> None:
        """
        Commands from the worker are dispatched to their responders, and their
        answers sent, as AMP does; an answer to a command that is not a
        hand-off fires its Deferred.
        """
        channel, worker = Recorder(), ControlChannel()
        channelTransport, workerTransport = connected(channel), connected(worker)
        worker.callRemote(Listening, key="tcp:80", address={"port": 80})
        channel.dataReceived(b"".join(workerTransport.written))
        assert channel.listening == ["tcp:80"]
        worker.dataReceived(b"".join(channelTransport.written))
        # A command sent through callRemote (tag 1): its answer fires its Deferred.
        answers: list[dict[str, Any]] = []
        channel.callRemote(NewConn, key="k", fds=[]).addCallback(answers.append)
        channel.dataReceived(answerBox(b"1", accepted=[]))
        assert [answer["accepted"] for answer in answers] == [[]]

    def test_aLostChannelFailsEveryHandOff(self) -> None:
        """
        Hand-offs in flight fail with the reason the channel was lost; one sent
        afterwards fails at once.
        """
        channel = Recorder()
        connected(channel)
        outcomes = Outcomes()
        channel.sendNewConn(b"k", [1], outcomes.answered, outcomes.failed, "a")
        channel.sendNewConn(b"k", [2], outcomes.answered, outcomes.failed, "b")
        channel.connectionLost(Failure(ConnectionDone()))
        assert [(reason.check(ConnectionDone), args) for reason, args in outcomes.failures] == [
            (ConnectionDone, ("a",)),
            (ConnectionDone, ("b",)),
        ]
        outcomes.failures.clear()
        channel.sendNewConn(b"k", [3], outcomes.answered, outcomes.failed, "c")
        assert [(reason.check(ConnectionDone), args) for reason, args in outcomes.failures] == [
            (ConnectionDone, ("c",))
        ]
        assert outcomes.answers == []

    def test_aHalfReadBoxIsCarried(self) -> None:
        """
        What the channel read of a box and did not parse yet, fed to the
        channel that takes the stream over (an upgrade), gives that one the
        box whole, once.
        """
        worker = ControlChannel()
        workerTransport = connected(worker)
        for key in ("whole", "cut in two", "after"):
            worker.callRemote(Listening, key=key, address={"port": 80})
        whole, cut, after = workerTransport.written
        first = Recorder()
        connected(first)
        first.dataReceived(whole + cut[:7])
        self.assertEqual(first.listening, ["whole"])
        self.assertEqual(first.unparsed(), cut[:7])
        then = Recorder()
        connected(then)
        then.dataReceived(first.unparsed())
        then.dataReceived(cut[7:] + after)
        self.assertEqual(then.listening, ["cut in two", "after"])
        self.assertEqual(then.unparsed(), b"")

    def test_sendingWithoutATransportRaises(self) -> None:
        channel = Recorder()
        with self.assertRaises(ConnectionLost):
            channel.sendNewConn(b"k", [1], Outcomes().answered, Outcomes().failed)

    def test_aKeyTooLongClosesTheChannel(self) -> None:
        """
        As AMP's parser: a key longer than 255 bytes closes the connection.
        """
        channel = Recorder()
        transport = connected(channel)
        channel.dataReceived(b"\x01\x00" + b"k" * 256 + b"\x00\x01v\x00\x00")
        assert transport.lost


class EagerWriteTests(SynchronousTestCase):
    """
    On the master's real channel transport (a socketpair) a hand-off box
    goes at once, in one message with its descriptors; when the socket is
    full the next boxes wait their turn, and each message still arrives
    with, or ahead of, the box that names it.
    """

    def setUp(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.reactor = MemoryReactorClock()
        self.channel = Recorder()
        self.transport: Any = adoptControlChannel(
            self.reactor, ours.fileno(), Factory.forProtocol(lambda: self.channel)
        )
        ours.close()
        self.workerEnd = theirs
        self.addCleanup(theirs.close)
        self.addCleanup(self.transport.connectionLost, Failure(ConnectionDone()))
        self.sockets = [socket.socketpair() for _ in range(3)]
        for pair in self.sockets:
            for end in pair:
                self.addCleanup(end.close)

    def receive(self) -> tuple[bytes, int]:
        """
        One C{recvmsg} of the worker's end: its bytes, and how many
        descriptors came with them (closed).
        """
        data, ancillary, _, _ = self.workerEnd.recvmsg(65536, socket.CMSG_SPACE(4 * 4))
        count = 0
        for _, _, payload in ancillary:
            for at in range(0, len(payload), 4):
                os.close(int.from_bytes(payload[at : at + 4], sys.byteorder))
                count += 1
        return data, count

    def test_sentAtOnce(self) -> None:
        """
        Nothing waits: the box and its descriptor are in the socket, in one
        message, without the reactor watching for writability.
        """
        outcomes = Outcomes()
        self.channel.sendNewConn(b"k", [self.sockets[0][0].fileno()], outcomes.answered, outcomes.failed)
        self.assertNotIn(self.transport, self.reactor.getWriters())
        data, count = self.receive()
        box = amp.AmpBox({b"_ask": b"1", b"_command": b"newconn", b"fds": b"0", b"key": b"k"})
        self.assertEqual((data, count), (box.serialize(), 1))

    def test_queuedBehindWhatWaits(self) -> None:
        """
        With the socket full, boxes wait for the reactor in order, each
        message of descriptors at or ahead of its box.
        """
        self.workerEnd.setblocking(False)
        filler = socket.socket(fileno=os.dup(self.transport.fileno()))
        filler.setblocking(False)
        filled = 0
        try:
            while True:
                filled += filler.send(b"\x00" * 65536)
        except BlockingIOError:
            pass
        finally:
            filler.close()
        outcomes = Outcomes()
        for pair in self.sockets[1:]:
            self.channel.sendNewConn(b"k", [pair[0].fileno()], outcomes.answered, outcomes.failed)
        self.assertIn(self.transport, self.reactor.getWriters())
        expected = [
            amp.AmpBox({b"_ask": tag, b"_command": b"newconn", b"fds": ordinal, b"key": b"k"}).serialize()
            for tag, ordinal in ((b"1", b"0"), (b"2", b"1"))
        ]
        received, descriptors, ahead = b"", 0, []
        while len(received) < filled + len(b"".join(expected)):
            try:
                data, count = self.receive()
            except BlockingIOError:
                self.transport.doWrite()
                continue
            if count:
                # Where the box its descriptors go with starts, at the latest.
                ahead.append(len(received))
            received += data
            descriptors += count
        self.assertEqual(received[filled:], b"".join(expected))
        self.assertEqual(descriptors, 2)
        boxStarts = [filled, filled + len(expected[0])]
        self.assertEqual(len(ahead), 2)
        for at, start in zip(ahead, boxStarts):
            self.assertLessEqual(at, start)
