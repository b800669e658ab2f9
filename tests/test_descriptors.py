"""
Descriptors on the control channel stay in step with the boxes that name
them, even when the receiver runs out of descriptors and the kernel drops
some (MSG_CTRUNC): over a real socketpair, with a real RLIMIT_NOFILE.
"""

from __future__ import annotations

import os
import resource
import socket
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, cast

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Factory
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from twistcluster._common.descriptors import MAX_PER_BOX, DescriptorInbox, raiseOpenFilesLimit
from twistcluster._common.protocol import (
    ControlChannel,
    NewConn,
    adoptControlChannel,
    adoptWorkerChannel,
)
from twistcluster._master.handoffchannel import HandOffChannel


class InboxTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.closed: list[int] = []
        self.inbox = DescriptorInbox(close=self.closed.append)

    def test_inStep(self) -> None:
        self.inbox.received([10, 11], False)
        self.inbox.received([12], False)
        self.assertEqual(self.inbox.take([0, 1]), [10, 11])
        self.assertEqual(self.inbox.take([2]), [12])
        self.assertEqual(self.inbox.take([2, 3]), [None, None])

    def test_truncatedMessage(self) -> None:
        """
        A message cut short: its box gets what arrived and L{None} for the
        rest; the messages received meanwhile are numbered from where the
        cut message ended, as the sender numbered them.
        """
        self.inbox.received([10], False)
        self.inbox.received([20, 21], True)  # of 0..3 (ordinals 1-4)
        self.inbox.received([30, 31], False)  # ordinals 5, 6
        self.inbox.received([40], True)  # of 7..8
        self.inbox.received([50], False)  # ordinal 9
        self.assertEqual(self.inbox.take([0]), [10])
        self.assertEqual(self.inbox.take([1, 2, 3, 4]), [20, 21, None, None])
        self.assertEqual(self.inbox.take([5, 6]), [30, 31])
        self.assertEqual(self.inbox.take([7, 8]), [40, None])
        self.assertEqual(self.inbox.take([9]), [50])
        self.assertEqual(self.inbox.lost, 3)

    def test_wholeMessageLost(self) -> None:
        self.inbox.received([], True)  # ordinals 0..2, none arrived
        self.inbox.received([7], False)
        self.assertEqual(self.inbox.take([0, 1, 2]), [None, None, None])
        self.assertEqual(self.inbox.take([3]), [7])

    def test_closeAll(self) -> None:
        self.inbox.received([1, 2], True)
        self.inbox.received([3], False)
        self.inbox.closeAll()
        self.assertEqual(sorted(self.closed), [1, 2, 3])


class Worker(ControlChannel):
    """
    A worker's end that records the descriptors each NewConn names (read
    back through their pipes), and closes them.
    """

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[list[bytes | None]] = []

    @NewConn.responder
    def newConn(self, key: str, fds: list[int | None]) -> dict[str, Any]:
        batch = []
        for fd in fds:
            if fd is None:
                batch.append(None)
            else:
                batch.append(os.read(fd, 100))
                os.close(fd)
        self.batches.append(batch)
        return {"accepted": [fd is not None for fd in fds]}


@contextmanager
def onlyFreeDescriptors(count: int) -> Iterator[None]:
    """
    Lower this process's soft RLIMIT_NOFILE so that exactly C{count} more
    descriptors can be opened.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    probe = os.open(os.devnull, os.O_RDONLY)
    os.close(probe)
    # Less the descriptor the listing itself used (the lowest free one).
    used = {int(name) for name in os.listdir("/proc/self/fd")} - {probe}
    limit, free = 0, 0
    while free < count or limit in used:
        if limit not in used:
            free += 1
        limit += 1
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


class ChannelTests(SynchronousTestCase):
    """
    The master's sending end and a worker's receiving end, on a real
    socketpair, driven by hand (no reactor runs).
    """

    def setUp(self) -> None:
        ours, theirs = socket.socketpair()
        self.master, self.worker = self.masterChannel(), Worker()
        self.masterEnd = adoptControlChannel(
            MemoryReactorClock(), ours.fileno(), Factory.forProtocol(lambda: self.master)
        )
        self.workerEnd = adoptWorkerChannel(
            MemoryReactorClock(), theirs.fileno(), Factory.forProtocol(lambda: self.worker)
        )
        ours.close()
        theirs.close()
        for end in (self.masterEnd, self.workerEnd):
            self.addCleanup(end.connectionLost, Failure(ConnectionDone()))
        self.pipes: list[tuple[int, int]] = []
        self.addCleanup(self.closePipes)

    def masterChannel(self) -> ControlChannel:
        return ControlChannel()

    def closePipes(self) -> None:
        for r, w in self.pipes:
            for fd in (r, w):
                try:
                    os.close(fd)
                except OSError:
                    pass

    def pipesHolding(self, names: tuple[bytes, ...]) -> list[int]:
        """
        A pipe's reading end per name, each holding its name.
        """
        fds = []
        for name in names:
            r, w = os.pipe()
            self.pipes.append((r, w))
            os.write(w, name)
            fds.append(r)
        return fds

    def handOff(self, *names: bytes) -> Any:
        """
        A NewConn naming one pipe per name, each holding its name.
        """
        return self.master.callRemote(NewConn, key="k", fds=self.pipesHolding(names))

    def workerReads(self) -> None:
        """
        Read everything the master has sent (one recvmsg at a time).
        """
        self.workerEnd.socket.setblocking(False)
        while True:
            try:
                pending = len(self.workerEnd.socket.recv(65536, socket.MSG_PEEK))
            except BlockingIOError:
                return
            self.assertGreater(pending, 0)
            self.workerEnd.doRead()

    def exchange(self) -> None:
        self.masterEnd.doWrite()
        self.workerReads()
        self.workerEnd.doWrite()
        self.masterEnd.doRead()

    def test_oneMessagePerBox(self) -> None:
        """
        Two boxes made in one turn travel as two messages, in one write; each
        box gets its own descriptors.
        """
        answers = [self.handOff(b"a", b"b"), self.handOff(b"c")]
        self.exchange()
        self.assertEqual(self.worker.batches, [[b"a", b"b"], [b"c"]])
        for answer in answers:
            self.successResultOf(answer)

    def test_truncatedThenInStep(self) -> None:
        """
        Out of descriptors, the worker gets only the first of five sockets
        (the kernel sets MSG_CTRUNC): the box names that one and L{None} for
        the four others, and the next boxes, one sent meanwhile, get exactly
        their own once descriptors are back.
        """
        first = self.handOff(b"1", b"2", b"3", b"4", b"5")
        second = self.handOff(b"6", b"7")
        self.masterEnd.doWrite()
        with onlyFreeDescriptors(1):
            self.workerEnd.doRead()
        self.workerReads()
        third = self.handOff(b"8")
        self.exchange()
        self.assertEqual(
            self.worker.batches,
            [[b"1", None, None, None, None], [b"6", b"7"], [b"8"]],
        )
        self.assertEqual(self.successResultOf(first)["accepted"], [True, False, False, False, False])
        self.successResultOf(second)
        self.successResultOf(third)
        self.assertEqual(self.worker.descriptors.lost, 4)

    def test_noneArrived(self) -> None:
        answers = [self.handOff(b"1", b"2")]
        self.masterEnd.doWrite()
        with onlyFreeDescriptors(0):
            self.workerEnd.doRead()
        answers.append(self.handOff(b"3"))
        self.exchange()
        self.assertEqual(self.worker.batches, [[None, None], [b"3"]])
        self.assertEqual([self.successResultOf(a)["accepted"] for a in answers], [[False, False], [True]])

    def test_receivedCloseOnExec(self) -> None:
        received: list[int] = []
        self.worker.descriptorsReceived = lambda fds, truncated: received.extend(fds)  # type: ignore[method-assign]
        self.handOff(b"x").addErrback(lambda reason: None)
        self.masterEnd.doWrite()
        self.workerReads()
        self.assertEqual(len(received), 1)
        self.assertFalse(os.get_inheritable(received[0]))
        os.close(received[0])

    def test_tooManyForOneBox(self) -> None:
        self.assertRaises(ValueError, self.master.callRemote, NewConn, key="k", fds=[0] * (MAX_PER_BOX + 1))


class ShortPathChannelTests(ChannelTests):
    """
    The same with the master's short path for hand-offs
    (L{HandOffChannel.sendNewConn}: each box sent at once, with its
    descriptors, when nothing waits).
    """

    def masterChannel(self) -> ControlChannel:
        return HandOffChannel()

    def handOff(self, *names: bytes) -> Any:
        answer: Deferred[dict[str, Any]] = Deferred()
        master = cast(HandOffChannel, self.master)
        master.sendNewConn(b"k", self.pipesHolding(names), lambda a: answer.callback(a), answer.errback)
        return answer

    def test_tooManyForOneBox(self) -> None:
        master = cast(HandOffChannel, self.master)
        with self.assertRaises(ValueError):
            master.sendNewConn(b"k", [0] * (MAX_PER_BOX + 1), print, print)


class UnaskedDescriptorsTests(SynchronousTestCase):
    def test_closedAsTheyArrive(self) -> None:
        channel = ControlChannel()
        channel.acceptsDescriptors = False
        before = len(os.listdir("/proc/self/fd"))
        for _ in range(100):
            r, w = os.pipe()
            os.close(w)
            channel.fileDescriptorReceived(r)
        self.assertEqual(len(os.listdir("/proc/self/fd")), before)
        self.assertEqual(channel.unaskedDescriptors, 100)
        self.assertEqual(channel.takeDescriptors([0, 1]), [None, None])

    def test_theMastersEndClosesThemTooInOneRead(self) -> None:
        """
        Descriptors a worker sends on a real channel reach the master's end
        as one message (one C{descriptorsReceived}), and each is closed.
        """
        ours, theirs = socket.socketpair()
        self.addCleanup(theirs.close)
        channel = ControlChannel()
        channel.acceptsDescriptors = False
        reports: list[int] = []
        received = channel.descriptorsReceived

        def descriptorsReceived(fds: list[int], truncated: bool) -> None:
            reports.append(len(fds))
            received(fds, truncated)

        channel.descriptorsReceived = descriptorsReceived  # type: ignore[method-assign]
        transport: Any = adoptControlChannel(
            MemoryReactorClock(), ours.fileno(), Factory.forProtocol(lambda: channel)
        )
        ours.close()
        self.addCleanup(transport.connectionLost, Failure(ConnectionDone()))
        pipes = [os.pipe() for _ in range(3)]
        for _, w in pipes:
            self.addCleanup(os.close, w)
        before = len(os.listdir("/proc/self/fd"))
        theirs.sendmsg(
            [b"x"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("3i", *(r for r, _ in pipes)))]
        )
        for r, _ in pipes:
            os.close(r)
        transport.doRead()
        self.assertEqual(reports, [3])
        self.assertEqual(channel.unaskedDescriptors, 3)
        self.assertEqual(len(os.listdir("/proc/self/fd")), before - 3)


class OpenFilesLimitTests(SynchronousTestCase):
    def test_softRaisedToHard(self) -> None:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        self.addCleanup(resource.setrlimit, resource.RLIMIT_NOFILE, (soft, hard))
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, 512), hard))
        self.assertEqual(raiseOpenFilesLimit(), (min(soft, 512), hard))
        self.assertEqual(resource.getrlimit(resource.RLIMIT_NOFILE), (hard, hard))
        self.assertEqual(raiseOpenFilesLimit(), (hard, hard))
