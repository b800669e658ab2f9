"""
The control channel's wire: batches of descriptors.
"""

from __future__ import annotations

import array
import os
import socket

import pytest_twisted
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory, Protocol
from twisted.trial.unittest import SynchronousTestCase

from twistcluster._common.protocol import NewConn, adoptControlChannel

TIMEOUT = 10


class Silent(Protocol):
    pass


@pytest_twisted.inlineCallbacks
def test_a_batch_of_descriptors_travels_in_one_message():
    """
    Descriptors queued together leave in one SCM_RIGHTS message, ahead of
    the bytes written after them, so the peer takes them in one recvmsg.
    """
    from twisted.internet import reactor

    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    transport = adoptControlChannel(reactor, ours.fileno(), Factory.forProtocol(Silent))
    ours.close()
    pipes = [os.pipe() for _ in range(5)]
    try:
        for readEnd, _ in pipes:
            transport.sendFileDescriptor(readEnd)
        transport.write(b"hello")
        theirs.setblocking(False)
        received: Deferred[tuple] = Deferred()

        def readable():
            reactor.removeReader(reader)
            received.callback(theirs.recvmsg(100, socket.CMSG_SPACE(4 * 300)))

        reader = _Readable(theirs, readable)
        reactor.addReader(reader)
        data, ancillary, flags, _ = yield received.addTimeout(TIMEOUT, reactor)
        assert len(ancillary) == 1
        level, kind, payload = ancillary[0]
        fds = array.array("i", payload).tolist()
        assert len(fds) == 5
        for fd, (_, writeEnd) in zip(fds, pipes):
            os.write(writeEnd, b"x")
            assert os.read(fd, 1) == b"x"
            os.close(fd)
        rest = data
        while len(rest) < 5:
            rest += theirs.recv(100)
        assert rest == b"hello"
    finally:
        transport.loseConnection()
        theirs.close()
        for readEnd, writeEnd in pipes:
            os.close(readEnd)
            os.close(writeEnd)


class _Readable:
    def __init__(self, sock: socket.socket, callback) -> None:
        self._sock = sock
        self._callback = callback

    def fileno(self) -> int:
        return self._sock.fileno()

    def doRead(self) -> None:
        self._callback()

    def logPrefix(self) -> str:
        return "test"

    def connectionLost(self, reason) -> None:
        pass


class NewConnTests(SynchronousTestCase):
    def test_emptyBatchRoundTrips(self) -> None:
        argument = dict(NewConn.arguments)[b"fds"]
        self.assertEqual(argument.fromStringProto(b"", None), [])
