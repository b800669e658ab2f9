"""
The master's end of a control channel against a worker that misbehaves, in
memory: what it closes, what it only refuses, and when it kills.  (The same
misbehaviour from real workers of a real cluster: tests.test_rogue.)
"""

from __future__ import annotations

import os
import socket
from typing import Any

from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Factory
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.protocols import amp
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from twistcluster._common.messages import CHUNK_SIZE
from twistcluster._common.protocol import CHANNEL_LOST_GRACE, Listening, Message, adoptControlChannel
from twistcluster._master.control import MAX_BOX_BYTES, MasterControl


class FakeWorker:
    id = 7
    pid = 1234
    exitedAfterDisconnect = False

    def __init__(self) -> None:
        self.state = "listening"
        self.killed: list[object] = []
        self.messages: list[Any] = []
        self.lost = 0

    def isServing(self) -> bool:
        return self.state in ("spawning", "online", "listening")

    def isDead(self) -> bool:
        return self.state == "dead"

    def controlLost(self) -> None:
        self.lost += 1
        self.state = "disconnected"

    def kill(self, signal: object) -> None:
        self.killed.append(signal)

    def listeningOn(self, key: str, address: Any = None) -> None:
        pass

    def messageReceived(self, value: Any) -> None:
        self.messages.append(("message", value))


def box(**values: bytes) -> bytes:
    return amp.AmpBox({k.encode(): v for k, v in values.items()}).serialize()


class ControlTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.worker = FakeWorker()
        self.clock = Clock()
        self.control = MasterControl(self.worker, None, self.clock)  # type: ignore[arg-type]
        self.transport = StringTransport()
        self.control.makeConnection(self.transport)
        self.events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def lose(self) -> None:
        self.control.connectionLost(Failure(ConnectionDone()))

    def logged(self, level: LogLevel | None = None) -> list[dict[str, Any]]:
        return [
            e
            for e in self.events
            if e.get("log_namespace", "").startswith("twistcluster")
            and (level is None or e["log_level"] == level)
        ]

    def test_garbageClosesTheChannel(self) -> None:
        """
        Bytes that are not AMP: one line in the log, the channel closed, and
        the worker killed if it has not exited after the grace period.
        """
        self.control.dataReceived(b"\xff" * 1000)
        self.assertTrue(self.transport.disconnecting)
        self.assertEqual(self.control.violation, "a key of 65535 bytes")
        self.assertEqual(len(self.logged(LogLevel.error)), 1)
        self.assertNotIn("log_failure", self.logged(LogLevel.error)[0])
        self.control.dataReceived(b"more garbage")  # ignored
        self.lose()
        self.clock.advance(CHANNEL_LOST_GRACE)
        self.assertEqual(self.worker.killed, [])
        self.clock.advance(1)
        self.assertEqual(self.worker.killed, ["KILL"])

    def test_boxOfNothing(self) -> None:
        self.control.dataReceived(box(hello=b""))
        self.assertTrue(self.transport.disconnecting)
        self.assertIn("NoEmptyBoxes", self.control.violation or "")

    def test_answerToNothing(self) -> None:
        self.control.dataReceived(box(_answer=b"99"))
        self.assertTrue(self.transport.disconnecting)

    def test_endlessBox(self) -> None:
        """
        A box that never ends (keys after keys): the channel is closed before
        the master holds much more than the longest box the protocol makes.
        """
        chunk = b"".join(b"\x00\x03k%02d\xff\xff" % (i % 100) + b"x" * 0xFFFF for i in range(8))
        sent = 0
        while not self.transport.disconnecting:
            self.control.dataReceived(chunk)
            sent += len(chunk)
            self.assertLess(sent, MAX_BOX_BYTES + 3 * len(chunk))
        self.assertIn("longer than", self.control.violation or "")

    def test_unknownCommandAnswered(self) -> None:
        """
        An unknown command gets AMP's error answer; the channel stays up, and
        the log says so once, however many come.
        """
        for ask in (b"1", b"2", b"3"):
            self.control.dataReceived(box(_command=b"nosuch", _ask=ask))
        self.assertFalse(self.transport.disconnecting)
        self.assertEqual(self.transport.value().count(b"_error_code"), 3)
        self.assertEqual(len(self.logged(LogLevel.warn)), 1)

    def test_badArgumentsAnswered(self) -> None:
        """
        A known command the master cannot take (its arguments are not what
        the command says): an error answer and one line, no traceback; the
        channel stays up.
        """
        self.control.dataReceived(box(_command=b"listening", _ask=b"1", key=b"k", address=b"{not json"))
        self.assertFalse(self.transport.disconnecting)
        self.assertIn(b"REFUSED", self.transport.value())
        [warning] = self.logged(LogLevel.warn)
        self.assertNotIn("log_failure", warning)

    def test_messageTooLargeIsRefusedChunkByChunk(self) -> None:
        """
        A message longer than the bound is refused as its chunks arrive (none
        is kept); the channel stays up, and the next message gets through.
        """
        self.control.maxMessageSize = 3 * CHUNK_SIZE
        self.control._assembler = None
        chunk = b"x" * CHUNK_SIZE
        for ask in range(1, 11):
            self.control.dataReceived(
                box(_command=Message.commandName, _ask=b"%d" % ask, id=b"1", chunk=chunk, more=b"True")
            )
        self.assertEqual(self.transport.value().count(b"MESSAGE_TOO_LARGE"), 7)
        self.assertLess(self.control._assembler._size, 4 * CHUNK_SIZE)  # type: ignore[union-attr]
        self.control.dataReceived(
            box(_command=Message.commandName, _ask=b"11", id=b"1", chunk=b"", more=b"False")
        )
        self.control.dataReceived(
            box(_command=Message.commandName, _ask=b"12", id=b"2", chunk=b'"hi"', more=b"False")
        )
        self.assertFalse(self.transport.disconnecting)
        self.assertEqual(self.worker.messages, [("message", "hi")])

    def test_descriptorsClosed(self) -> None:
        before = len(os.listdir("/proc/self/fd"))
        for _ in range(50):
            r, w = os.pipe()
            os.close(w)
            self.control.fileDescriptorReceived(r)
        self.assertEqual(len(os.listdir("/proc/self/fd")), before)
        self.assertEqual(len(self.logged(LogLevel.warn)), 1)

    def test_workerClosedItsChannel(self) -> None:
        """
        The worker closed its channel without being asked to leave: killed
        unless it exits within the grace period, and a worker that exits (a
        crash closes the channel before its exit is seen) is not warned about.
        """
        self.lose()
        self.assertEqual(self.worker.lost, 1)
        self.worker.state = "dead"
        self.clock.advance(CHANNEL_LOST_GRACE + 1)
        self.assertEqual(self.worker.killed, [])
        self.assertEqual(self.logged(LogLevel.warn), [])

    def test_workerLingeringWithoutItsChannel(self) -> None:
        """
        A worker still running once the grace period after it closed its
        channel unasked is over: one warning naming it, and it is killed.
        """
        self.lose()
        self.clock.advance(CHANNEL_LOST_GRACE)
        self.assertEqual((self.worker.killed, self.logged(LogLevel.warn)), ([], []))
        self.clock.advance(1)
        self.assertEqual(self.worker.killed, ["KILL"])
        [warning] = self.logged(LogLevel.warn)
        self.assertIn("closed (unasked); killing it", formatEvent(warning))

    def test_leavingWorkerNotKilled(self) -> None:
        for leaving in ("disconnecting", "exitedAfterDisconnect"):
            worker = FakeWorker()
            if leaving == "disconnecting":
                worker.state = "disconnecting"
            else:
                worker.exitedAfterDisconnect = True
            control = MasterControl(worker, None, self.clock)  # type: ignore[arg-type]
            control.makeConnection(StringTransport())
            control.connectionLost(Failure(ConnectionDone()))
            self.clock.advance(CHANNEL_LOST_GRACE + 1)
            self.assertEqual(worker.killed, [], leaving)

    def test_closedByTheMasterNotKilled(self) -> None:
        """
        The primary closed the channel itself (C{worker.process.disconnect()}
        in Node's API): the worker exits on its own; nothing is killed.
        """
        self.transport.loseConnection()
        self.lose()
        self.clock.advance(CHANNEL_LOST_GRACE + 1)
        self.assertEqual(self.worker.killed, [])

    def test_goodCommandsStillWork(self) -> None:
        self.control.dataReceived(box(_command=Listening.commandName, key=b"k", address=b"{}"))
        self.assertFalse(self.transport.disconnecting)
        self.assertEqual(self.logged(LogLevel.warn), [])


class QuietTests(SynchronousTestCase):
    """
    An upgrade waits until the master's channel is quiet: a hand-off sent
    on the short path and not answered keeps it busy.
    """

    def channel(self) -> MasterControl:
        """
        A master's end of a control channel over a real socketpair.
        """
        ours, theirs = socket.socketpair()
        self.addCleanup(theirs.close)
        control = MasterControl(FakeWorker(), None, Clock())  # type: ignore[arg-type]
        transport: Any = adoptControlChannel(
            MemoryReactorClock(), ours.fileno(), Factory.forProtocol(lambda: control)
        )
        ours.close()
        self.addCleanup(transport.connectionLost, Failure(ConnectionDone()))
        return control

    def test_aHandOffInFlightIsNotQuiet(self) -> None:
        control = self.channel()
        self.assertTrue(control.isQuiet())
        answers: list[object] = []
        control.sendNewConn(b"k", [], lambda answer: answers.append(answer), answers.append)
        self.assertFalse(control.isQuiet())
        control.dataReceived(box(_answer=b"1", accepted=b""))
        self.assertEqual(answers, [{"accepted": [], "outOfDescriptors": None}])
        self.assertTrue(control.isQuiet())

    def test_aHalfReceivedMessageIsNotQuiet(self) -> None:
        """
        A worker's message whose first chunk arrived and whose last has not
        keeps the channel busy (an upgrade would lose its first chunks).
        """
        control = self.channel()
        self.assertTrue(control.isQuiet())
        control.dataReceived(box(_command=Message.commandName, id=b"1", chunk=b'"h', more=b"True"))
        self.assertFalse(control.isQuiet())
        control.dataReceived(box(_command=Message.commandName, id=b"1", chunk=b'i"', more=b"False"))
        self.assertTrue(control.isQuiet())
