"""
What the old image of a master hands over, taken over by another protocol
or process object in the same process, on real sockets, pipes and child
processes: a control channel in the middle of a box, AMP's descriptor
numbering, and a child process with its output pipes.
"""

from __future__ import annotations

import os
import socket
import sys
from typing import Any

import pytest_twisted
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory, ProcessProtocol
from twisted.protocols import amp
from twisted.python.failure import Failure

from twistcluster._common.protocol import Close, ControlChannel, NewConn, adoptControlChannel
from twistcluster._common.twistedinternals import AdoptedProcess, unparsedBytes

TIMEOUT = 10


class Recorder(ControlChannel):
    """
    The master's end: records every C{Close} it is told.
    """

    def __init__(self, closed: list[str]) -> None:
        super().__init__()
        self.closed = closed

    @Close.responder
    def close(self, key: str) -> dict[str, Any]:
        self.closed.append(key)
        return {}


class Taker(ControlChannel):
    """
    The worker's end: answers C{NewConn} with the inode of each socket.
    """

    def __init__(self) -> None:
        super().__init__()
        self.inodes: list[int] = []

    @NewConn.responder
    def newConn(self, key: str, fds: list[int]) -> dict[str, Any]:
        for fd in fds:
            self.inodes.append(os.fstat(fd).st_ino)
            os.close(fd)
        return {"accepted": [True] * len(fds)}


def adopt(reactor: Any, fd: int, protocol: ControlChannel) -> Any:
    return adoptControlChannel(reactor, fd, Factory.forProtocol(lambda: protocol))


def boxBytes(key: str) -> bytes:
    return amp.AmpBox(_command=b"close", key=key.encode()).serialize()


def waitUntil(reactor: Any, predicate: Any) -> Deferred[None]:
    done: Deferred[None] = Deferred()

    def look() -> None:
        if predicate():
            done.callback(None)
        else:
            reactor.callLater(0.01, look)

    look()
    return done.addTimeout(TIMEOUT, reactor)


@pytest_twisted.inlineCallbacks
def test_a_half_read_box_is_carried():
    """
    What one protocol read of a box, and did not parse, goes to the next:
    the box arrives whole, exactly once, with the ones before and after it.
    """
    from twisted.internet import reactor

    ours, theirs = socket.socketpair()
    closed: list[str] = []
    first = Recorder(closed)
    transport = adopt(reactor, ours.fileno(), first)
    second = boxBytes("cut in two")
    theirs.sendall(boxBytes("whole") + second[:7])
    yield waitUntil(reactor, lambda: closed == ["whole"] and unparsedBytes(first))
    transport.stopReading()
    carried = unparsedBytes(first)
    assert carried == second[:7]
    theirs.sendall(second[7:] + boxBytes("after"))
    # The next protocol, on a duplicate of the same socket.
    then = Recorder(closed)
    adopt(reactor, ours.fileno(), then)
    then.dataReceived(carried)
    yield waitUntil(reactor, lambda: len(closed) == 3)
    assert closed == ["whole", "cut in two", "after"]
    for end in (ours, theirs):
        end.close()
    first.transport.loseConnection()
    then.transport.loseConnection()


@pytest_twisted.inlineCallbacks
def test_descriptor_numbering_goes_on():
    """
    A box names the descriptors sent with it by ordinal; the protocol that
    takes over the channel goes on where the first left off, so the peer
    takes each one for the box that names it.
    """
    from twisted.internet import reactor

    ours, theirs = socket.socketpair()
    peer = Taker()
    adopt(reactor, theirs.fileno(), peer)
    first = ControlChannel()
    transport = adopt(reactor, ours.fileno(), first)
    sockets = [socket.socket() for _ in range(3)]
    yield first.callRemote(NewConn, key="k", fds=[s.fileno() for s in sockets[:2]])
    transport.stopReading()
    sent = first.descriptorsSent
    assert sent == 2
    then = ControlChannel()
    adopt(reactor, ours.fileno(), then)
    then.continueNumbering(sent)
    first.transport.stopWriting()
    yield then.callRemote(NewConn, key="k", fds=[sockets[2].fileno()])
    assert peer.inodes == [os.fstat(s.fileno()).st_ino for s in sockets]
    for s in [*sockets, ours, theirs]:
        s.close()
    for protocol in (first, then, peer):
        protocol.transport.loseConnection()


class Collector(ProcessProtocol):
    def __init__(self) -> None:
        self.output: dict[int, bytes] = {1: b"", 2: b""}
        self.ended: Deferred[BaseException] = Deferred()

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        self.output[childFD] += data

    def processEnded(self, reason: Failure) -> None:
        self.ended.callback(reason.value)


def spawnUnwatched(code: str) -> tuple[int, int, int]:
    """
    A child process this reactor did not spawn (as one spawned before an
    exec): its pid and the read ends of its stdout and stderr.
    """
    out, err = os.pipe(), os.pipe()
    pid = os.posix_spawn(
        sys.executable,
        [sys.executable, "-c", code],
        os.environ,
        file_actions=[(os.POSIX_SPAWN_DUP2, out[1], 1), (os.POSIX_SPAWN_DUP2, err[1], 2)],
    )
    os.close(out[1])
    os.close(err[1])
    return pid, out[0], err[0]


@pytest_twisted.inlineCallbacks
def test_an_adopted_process_is_read_and_reaped():
    """
    A child process adopted with its output pipes: its output is read, and
    when it exits, it is reaped and its exit status told, as for one the
    reactor spawned.
    """
    from twisted.internet import reactor

    pid, out, err = spawnUnwatched(
        "import sys, time; time.sleep(0.5); sys.stdout.write('out'); sys.stderr.write('err'); sys.exit(3)"
    )
    collector = Collector()
    process = AdoptedProcess(reactor, pid, collector, {1: out, 2: err})
    assert process.pid == pid
    ended = yield collector.ended.addTimeout(TIMEOUT, reactor)
    assert ended.exitCode == 3
    assert collector.output == {1: b"out", 2: b"err"}
    assert not os.path.exists(f"/proc/{pid}")


@pytest_twisted.inlineCallbacks
def test_a_process_that_ended_before_it_was_adopted():
    """
    One already reaped: its status is told once its pipes are read to
    their end.
    """
    from twisted.internet import reactor

    pid, out, err = spawnUnwatched("print('bye')")
    _, status = os.waitpid(pid, 0)
    collector = Collector()
    AdoptedProcess(reactor, pid, collector, {1: out, 2: err}, status)
    ended = yield collector.ended.addTimeout(TIMEOUT, reactor)
    assert ended.exitCode == 0
    assert collector.output[1] == b"bye\n"
