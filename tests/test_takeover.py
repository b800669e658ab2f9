"""
Protocols that take their connection's socket over (inetd's hands it to a
child process): the worker's transport (L{PromptCloseServer}) must leave
such a connection as Twisted's own transport leaves it, never reading it
early.  Each protocol is run over both transports on real loopback sockets
and what a user could observe is compared; then inetd itself, clustered.
"""

from __future__ import annotations

import getpass
import os
import socket
import threading
import time
from typing import Any

import pytest
from twisted.internet import fdesc, tcp
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure

from tests._cluster import connect, readLine
from tests.test_transport import ConnectedPair, RecordingReactor, received, waitReadable
from twistcluster._common.transport import PromptCloseServer


class Recording(Protocol):
    """
    Records what it reads; C{takeOver} is what it does in connectionMade.
    """

    def __init__(self, takeOver) -> None:
        self.takeOver = takeOver
        self.read = b""

    def connectionMade(self) -> None:
        self.takeOver(self.transport)

    def dataReceived(self, data: bytes) -> None:
        self.read += data


def inetdLike(transport: Any) -> None:
    # twisted.runner.inetd.InetdProtocol.connectionMade, less the process.
    fd = transport.fileno()
    fdesc.setBlocking(fd)
    transport.reactor.removeReader(transport)
    transport.reactor.removeWriter(transport)


def blockingThroughTheSocket(transport: Any) -> None:
    transport.socket.setblocking(True)


def handleTaken(transport: Any) -> None:
    transport.getHandle()


def stopsReading(transport: Any) -> None:
    transport.stopReading()


def greets(transport: Any) -> None:
    transport.write(b"hello\n")


def observe(testCase, transportClass, takeOver, sent: bytes) -> dict[str, Any]:
    """
    Serve a loopback connection whose client sent C{sent} with a
    L{Recording} protocol over C{transportClass}; what a user could see.
    """
    reactor = RecordingReactor()
    pair = ConnectedPair(testCase)
    if sent:
        pair.client.sendall(sent)
        waitReadable(pair.serverFD)
    protocol = Recording(takeOver)
    transport = transportClass._fromConnectedSocket(
        pair.serverFD, socket.AF_INET, Factory.forProtocol(lambda: protocol), reactor
    )
    if isinstance(transport, PromptCloseServer):
        transport.opened()
    os.close(pair.serverFD)
    testCase.addCleanup(lambda: transport.connected and transport.connectionLost(Failure(ConnectionDone())))
    left = b""
    if transport.connected:
        # What the socket still holds for whoever took it.
        with socket.socket(fileno=os.dup(transport.socket.fileno())) as peek:
            try:
                left = peek.recv(100, socket.MSG_DONTWAIT | socket.MSG_PEEK)
            except BlockingIOError:
                pass
    return {
        "read": protocol.read,
        "left in the socket": left,
        "reading": transport in reactor.getReaders(),
        "writing": transport in reactor.getWriters(),
        "client got": received(pair.client),
    }


@pytest.mark.parametrize("takeOver", [inetdLike, blockingThroughTheSocket, handleTaken, stopsReading, greets])
@pytest.mark.parametrize("sent", [b"", b"first bytes"])
def test_same_as_twisted(takeOver, sent):
    """
    Whatever the protocol does in connectionMade, the worker's transport
    leaves the connection as Twisted's does: the same bytes read by the
    protocol, left in the socket, sent to the client, and the same
    registrations.
    """

    class Case:
        def __init__(self) -> None:
            self.cleanups: list = []

        def addCleanup(self, f, *a):
            self.cleanups.append((f, a))

    case = Case()
    try:
        ours = observe(case, PromptCloseServer, takeOver, sent)
        twisted = observe(case, tcp.Server, takeOver, sent)
    finally:
        for f, a in reversed(case.cleanups):
            f(*a)
    if takeOver is greets and sent:
        # The difference the README lists: the first read comes at once.
        assert ours["read"] == sent and twisted["read"] == b""
        twisted["read"], twisted["left in the socket"] = ours["read"], ours["left in the socket"]
    assert ours == twisted
    if takeOver is inetdLike:
        assert ours["left in the socket"] == sent and not ours["reading"]


# inetd, clustered


def test_inetd_cat_gets_every_clients_first_bytes(cluster, tmp_path):
    """
    inetd with /bin/cat on 2 workers: 6 clients that connect and wait before
    they send are all echoed, and a client that sends at once meanwhile is
    served at once (no worker is stuck reading a socket inetd gave away).
    """
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    conf = tmp_path / "inetd.conf"
    conf.write_text(f"{port} stream tcp nowait {getpass.getuser()} /bin/cat cat\n")
    c = cluster("--workers", "2", "--", "inetd", "--file", str(conf))
    c.waitReady(2)
    waiting = [connect(("127.0.0.1", port)) for _ in range(6)]
    try:
        time.sleep(0.5)  # they are with the workers, and waiting
        started = time.monotonic()
        with connect(("127.0.0.1", port)) as prompt:
            prompt.sendall(b"at once\n")
            assert readLine(prompt) == "at once\n"
        assert time.monotonic() - started < 5.0
        echoed = []

        def talk(n: int, sock: socket.socket) -> None:
            sock.sendall(f"client {n}\n".encode())
            echoed.append(readLine(sock))

        threads = [threading.Thread(target=talk, args=(n, s)) for n, s in enumerate(waiting)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(15)
        assert sorted(echoed) == sorted(f"client {n}\n" for n in range(6))
    finally:
        for sock in waiting:
            sock.close()
