"""
A worker's TCP transport (L{PromptCloseServer}) and its port for a shared
listening socket (L{ServingTCPPort}), over real loopback sockets.  The
reactor is a fake that records what is registered for reading and writing;
each test calls C{doRead}/C{doWrite} as the reactor would.  The last test
runs them in real workers under a real client.
"""

from __future__ import annotations

import errno
import select
import signal
import socket
from typing import Any

import pytest
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from tests.clusterapps import pattern
from twistcluster._common.ports import ServingTCPPort
from twistcluster._common.transport import PromptCloseServer, serveConnection
from twistcluster._common.twistedinternals import TCPServer, adoptTCPConnection, adoptTCPPort


class Responder(Protocol):
    """
    Answers each read with C{response}, then closes if C{close}.
    """

    response = b"HELLO"
    close = False
    abort = False
    lost: Failure | None = None

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(self.response)  # type: ignore[union-attr]
        if self.abort:
            self.transport.abortConnection()  # type: ignore[union-attr]
        elif self.close:
            self.transport.loseConnection()  # type: ignore[union-attr]

    def connectionLost(self, reason: Failure = ConnectionDone()) -> None:  # type: ignore[assignment]
        self.lost = reason


def received(client: socket.socket) -> bytes | None:
    """
    What has reached C{client} already (C{b""} at end of stream), without
    waiting; L{None} if nothing has.
    """
    try:
        return client.recv(1 << 16, socket.MSG_DONTWAIT)
    except BlockingIOError:
        return None


def waitReadable(fd: int) -> None:
    """
    Wait (at most 5 s) until C{fd} has something to read.
    """
    readable, _, _ = select.select([fd], [], [], 5)
    assert readable, "nothing arrived"


class RecordingReactor(MemoryReactorClock):
    """
    A fake reactor that also records everything ever registered with it.
    """

    def __init__(self) -> None:
        super().__init__()
        self.registered: list[tuple[str, Any]] = []

    def addReader(self, reader: Any) -> None:
        self.registered.append(("reader", reader))
        super().addReader(reader)

    def addWriter(self, writer: Any) -> None:
        self.registered.append(("writer", writer))
        super().addWriter(writer)


class ConnectedPair:
    """
    A loopback TCP connection: C{client}, and the server side's descriptor.
    """

    def __init__(self, testCase: SynchronousTestCase) -> None:
        with socket.socket() as listening:
            listening.bind(("127.0.0.1", 0))
            listening.listen(1)
            self.client = socket.create_connection(listening.getsockname())
            server, _ = listening.accept()
        server.setblocking(False)
        self.serverFD = server.detach()
        testCase.addCleanup(self.client.close)


def serve(
    testCase: SynchronousTestCase, protocol: Protocol, sent: bytes = b"", shutdown: bool = False
) -> tuple[Any, socket.socket, RecordingReactor]:
    """
    Serve a loopback connection with C{protocol} through serveConnection(),
    its client having sent C{sent} (and then shut down its sending half, if
    C{shutdown}) by the time it is served.
    """
    reactor = RecordingReactor()
    pair = ConnectedPair(testCase)
    if sent:
        pair.client.sendall(sent)
    if shutdown:
        pair.client.shutdown(socket.SHUT_WR)
    if sent or shutdown:
        waitReadable(pair.serverFD)
    transport = serveConnection(reactor, pair.serverFD, socket.AF_INET, Factory.forProtocol(lambda: protocol))
    # serveConnection works on a duplicate of the descriptor.
    socket.socket(fileno=pair.serverFD).close()
    testCase.addCleanup(lambda: transport.connected and transport.connectionLost(Failure(ConnectionDone())))
    return transport, pair.client, reactor


class PromptCloseServerTests(SynchronousTestCase):
    def serve(self, protocol: Responder) -> tuple[Any, socket.socket, RecordingReactor]:
        return serve(self, protocol)

    def test_aPromptCloseServer(self) -> None:
        """
        serveConnection() serves a TCP socket with a PromptCloseServer, which
        reads as Twisted's transport does.
        """
        protocol = Responder()
        transport, _client, reactor = self.serve(protocol)
        self.assertIsInstance(transport, PromptCloseServer)
        self.assertIs(protocol.transport, transport)
        self.assertIn(transport, reactor.getReaders())

    def test_closedByTheRead(self) -> None:
        """
        A response and loseConnection() in one read: the peer has the
        response and the end of the stream when the read returns, the
        protocol has lost its connection cleanly, and the reactor holds
        nothing of it, never having watched it for writability.
        """
        protocol = Responder()
        protocol.close = True
        transport, client, reactor = self.serve(protocol)
        client.sendall(b"hello")
        self.assertIsNone(transport.doRead())
        self.assertEqual(received(client), b"HELLO")
        self.assertEqual(received(client), b"")
        assert protocol.lost is not None
        protocol.lost.trap(ConnectionDone)
        self.assertNotIn(transport, reactor.getReaders())
        self.assertNotIn(transport, reactor.getWriters())

    def test_twistedClosesOnTheNextTurn(self) -> None:
        """
        The difference L{test_closedByTheRead} shows: Twisted's own transport
        sends nothing during the read and waits for writability.
        """
        reactor = MemoryReactorClock()
        pair = ConnectedPair(self)

        class Closing(Responder):
            close = True

        transport = adoptTCPConnection(
            TCPServer, reactor, pair.serverFD, socket.AF_INET, Factory.forProtocol(Closing)
        )
        socket.socket(fileno=pair.serverFD).close()
        self.addCleanup(transport.connectionLost, Failure(ConnectionDone()))
        pair.client.sendall(b"hello")
        transport.doRead()
        self.assertIsNone(received(pair.client))
        self.assertIn(transport, reactor.getWriters())

    def test_closedWithNothingWritten(self) -> None:
        """
        loseConnection() alone in a read closes at the end of the read too.
        """
        protocol = Responder()
        protocol.response = b""
        protocol.close = True
        transport, client, reactor = self.serve(protocol)
        client.sendall(b"hello")
        transport.doRead()
        self.assertEqual(received(client), b"")
        self.assertIsNotNone(protocol.lost)
        self.assertEqual(reactor.getWriters(), [])

    def test_openConnectionWaitsForWritability(self) -> None:
        """
        What is written on a connection that stays open is sent as Twisted
        sends it: once the reactor reports the socket writable.
        """
        transport, client, reactor = self.serve(Responder())
        client.sendall(b"hello")
        self.assertIsNone(transport.doRead())
        self.assertIn(transport, reactor.getWriters())
        self.assertIsNone(received(client))
        transport.doWrite()
        self.assertEqual(received(client), b"HELLO")
        self.assertNotIn(transport, reactor.getWriters())

    def test_restWaitsForWritability(self) -> None:
        """
        A closing response that does not fit in the socket's buffer: the
        rest waits for writability, as in Twisted, all of it is sent, and
        only then is the connection closed.
        """
        protocol = Responder()
        protocol.response = b"x" * (16 << 20)
        protocol.close = True
        transport, client, reactor = self.serve(protocol)
        client.sendall(b"hello")
        transport.doRead()
        self.assertIn(transport, reactor.getWriters())
        self.assertIsNone(protocol.lost)
        got = 0
        while transport in reactor.getWriters():
            got += len(received(client) or b"")
            why = transport.doWrite()
        # All sent: doWrite() tells the reactor to close it, as Twisted's does.
        self.assertIsInstance(why, ConnectionDone)
        transport.connectionLost(Failure(why))
        client.settimeout(5)
        while chunk := client.recv(1 << 20):
            got += len(chunk)
        self.assertEqual(got, len(protocol.response))

    def test_writeOutsideARead(self) -> None:
        """
        A write outside a read (from a timer, say) waits for writability, as
        in Twisted.
        """
        transport, client, reactor = self.serve(Responder())
        transport.write(b"tick")
        self.assertIn(transport, reactor.getWriters())
        self.assertIsNone(received(client))
        transport.doWrite()
        self.assertEqual(received(client), b"tick")

    def test_abortDiscards(self) -> None:
        """
        abortConnection() after a write in the same read sends nothing and
        leaves nothing registered, as in Twisted.
        """
        protocol = Responder()
        protocol.abort = True
        transport, client, reactor = self.serve(protocol)
        client.sendall(b"hello")
        transport.doRead()
        self.assertNotIn(transport, reactor.getWriters())
        reactor.advance(0)
        self.assertIsNotNone(protocol.lost)
        client.settimeout(5)
        with self.assertRaises(ConnectionResetError):
            client.recv(100)

    def test_readErrorRaises(self) -> None:
        """
        A protocol's exception leaves the read as it does in Twisted (the
        reactor logs it and drops the connection); a later read that closes
        is handled as before.
        """

        class Failing(Responder):
            close = True
            calls = 0

            def dataReceived(self, data: bytes) -> None:
                self.calls += 1
                if self.calls == 1:
                    self.transport.write(b"partial")  # type: ignore[union-attr]
                    raise ZeroDivisionError()
                super().dataReceived(data)

        transport, client, reactor = self.serve(Failing())
        client.sendall(b"one")
        self.assertRaises(ZeroDivisionError, transport.doRead)
        client.sendall(b"two")
        transport.doRead()
        self.assertEqual(received(client), b"partialHELLO")
        self.assertEqual(received(client), b"")


class FirstReadTests(SynchronousTestCase):
    """
    L{PromptCloseServer.opened}: what the peer sent before the connection
    was opened is served at once, without waiting for the reactor.
    """

    def serveAfter(
        self, sent: bytes, protocol: Protocol, shutdown: bool = False
    ) -> tuple[Any, socket.socket, RecordingReactor]:
        return serve(self, protocol, sent, shutdown)

    def test_answeredAndClosedWithoutTheReactor(self) -> None:
        """
        A request already there when the connection is opened is answered,
        and the connection closed, before serveConnection() returns; the
        reactor never had it registered.
        """
        protocol = Responder()
        protocol.close = True
        _, client, reactor = self.serveAfter(b"hello", protocol)
        self.assertEqual(received(client), b"HELLO")
        self.assertEqual(received(client), b"")
        assert protocol.lost is not None
        protocol.lost.trap(ConnectionDone)
        self.assertEqual(reactor.registered, [])

    def test_twistedWaitsForTheReactor(self) -> None:
        """
        The difference: Twisted's own transport registers the connection and
        reads nothing until the reactor reports it readable.
        """
        reactor = RecordingReactor()
        pair = ConnectedPair(self)
        pair.client.sendall(b"hello")
        waitReadable(pair.serverFD)
        protocol = Responder()
        transport = adoptTCPConnection(
            TCPServer, reactor, pair.serverFD, socket.AF_INET, Factory.forProtocol(lambda: protocol)
        )
        socket.socket(fileno=pair.serverFD).close()
        self.addCleanup(transport.connectionLost, Failure(ConnectionDone()))
        self.assertEqual(reactor.registered, [("reader", transport)])
        self.assertIsNone(received(pair.client))

    def test_openConnectionRegisteredAfterTheRead(self) -> None:
        """
        A connection that stays open after its first read is registered for
        reading, and its answer waits for writability as any other.
        """
        transport, client, reactor = self.serveAfter(b"hello", Responder())
        self.assertEqual(reactor.registered, [("reader", transport), ("writer", transport)])
        self.assertIsNone(received(client))
        transport.doWrite()
        self.assertEqual(received(client), b"HELLO")

    def test_nothingYet(self) -> None:
        """
        With nothing sent yet, the connection is registered for reading and
        its protocol has received nothing.
        """

        class Counting(Responder):
            reads = 0

            def dataReceived(self, data: bytes) -> None:
                self.reads += 1

        protocol = Counting()
        transport, _, reactor = serve(self, protocol)
        self.assertEqual(reactor.registered, [("reader", transport)])
        self.assertEqual(protocol.reads, 0)

    def test_pausedByConnectionMade(self) -> None:
        """
        A protocol that pauses its transport in connectionMade() is not read
        until it resumes, and then through the reactor.
        """

        class Paused(Responder):
            close = True

            def connectionMade(self) -> None:
                self.transport.pauseProducing()  # type: ignore[union-attr]

        protocol = Paused()
        transport, client, reactor = self.serveAfter(b"hello", protocol)
        self.assertEqual(reactor.registered, [])
        self.assertIsNone(received(client))
        transport.resumeProducing()
        self.assertEqual(reactor.registered, [("reader", transport)])
        transport.doRead()
        self.assertEqual(received(client), b"HELLO")

    def test_closedByConnectionMade(self) -> None:
        """
        A protocol that closes its connection in connectionMade() is not read;
        the close takes Twisted's course.
        """

        class Closing(Responder):
            def connectionMade(self) -> None:
                self.transport.write(b"BYE")  # type: ignore[union-attr]
                self.transport.loseConnection()  # type: ignore[union-attr]

            def dataReceived(self, data: bytes) -> None:
                raise AssertionError("read after loseConnection()")

        transport, client, reactor = self.serveAfter(b"hello", Closing())
        self.assertEqual({kind for kind, _ in reactor.registered}, {"writer"})
        self.assertIsInstance(transport.doWrite(), ConnectionDone)
        self.assertEqual(received(client), b"BYE")

    def test_peerGoneAlready(self) -> None:
        """
        A peer that connected and closed without sending: the protocol loses
        its connection cleanly and nothing is registered.
        """
        protocol = Responder()
        _, _, reactor = self.serveAfter(b"", protocol, shutdown=True)
        assert protocol.lost is not None
        protocol.lost.trap(ConnectionDone)
        self.assertEqual(reactor.registered, [])

    def test_halfCloseOnFirstRead(self) -> None:
        """
        A half-closeable protocol whose peer shut down its sending half before
        the open gets readConnectionLost(), as from the reactor, and can still
        answer; it is not registered for reading.
        """

        @implementer(IHalfCloseableProtocol)
        class HalfClosing(Responder):
            def readConnectionLost(self) -> None:
                self.transport.write(b"BYE")  # type: ignore[union-attr]
                self.transport.loseConnection()  # type: ignore[union-attr]

            def writeConnectionLost(self) -> None:
                pass

        protocol = HalfClosing()
        transport, client, reactor = self.serveAfter(b"", protocol, shutdown=True)
        self.assertIsNone(protocol.lost)
        self.assertEqual({kind for kind, _ in reactor.registered}, {"writer"})
        self.assertIsInstance(transport.doWrite(), ConnectionDone)
        self.assertEqual(received(client), b"BYE")

    def test_errorInFirstRead(self) -> None:
        """
        An exception in the first read is logged and costs the connection,
        as the reactor handles one; nothing is registered.
        """

        class Failing(Responder):
            def dataReceived(self, data: bytes) -> None:
                raise ZeroDivisionError()

        protocol = Failing()
        _, client, reactor = self.serveAfter(b"hello", protocol)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        assert protocol.lost is not None
        protocol.lost.trap(ZeroDivisionError)
        self.assertEqual(reactor.registered, [])
        client.settimeout(5)
        self.assertEqual(client.recv(10), b"")


class ServingTCPPortTests(SynchronousTestCase):
    def listen(self, factory: Factory, host: str = "127.0.0.1") -> tuple[ServingTCPPort, RecordingReactor]:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        listening = socket.socket(family)
        self.addCleanup(listening.close)
        listening.bind((host, 0))
        listening.listen(16)
        listening.setblocking(False)
        reactor = RecordingReactor()
        port = adoptTCPPort(ServingTCPPort, reactor, listening.fileno(), family, factory)
        port.startListening()
        self.addCleanup(port.connectionLost, Failure(ConnectionDone()))
        return port, reactor

    def connect(self, port: ServingTCPPort) -> socket.socket:
        address = port.getHost()
        client = socket.create_connection((address.host, address.port))
        self.addCleanup(client.close)
        return client

    def test_burstInOnePass(self) -> None:
        """
        One read of the port accepts every waiting connection, each served
        by a PromptCloseServer with its peer's address and its own session
        number.
        """
        built: list[Any] = []

        class Recorded(Factory):
            def buildProtocol(self, addr: Any) -> Protocol:
                built.append(addr)
                return Responder()

        port, reactor = self.listen(Recorded())
        clients = [self.connect(port) for _ in range(5)]
        port.doRead()
        transports = [t for t in reactor.getReaders() if t is not port]
        self.assertEqual(len(transports), 5)
        self.assertTrue(all(isinstance(t, PromptCloseServer) for t in transports))
        self.assertEqual(sorted(t.sessionno for t in transports), [0, 1, 2, 3, 4])
        self.assertEqual(sorted(a.port for a in built), sorted(c.getsockname()[1] for c in clients))
        for transport in transports:
            self.addCleanup(transport.connectionLost, Failure(ConnectionDone()))

    def test_burstOpenedAtTheEnd(self) -> None:
        """
        Connections accepted in one pass are opened at its end: every
        connectionMade() comes before the first read, and requests already
        sent are answered and closed within the pass, none of them ever
        registered with the reactor.
        """
        events: list[tuple[str, int]] = []

        class Recorded(Responder):
            close = True

            def connectionMade(self) -> None:
                events.append(("made", self.transport.sessionno))  # type: ignore[union-attr]

            def dataReceived(self, data: bytes) -> None:
                events.append(("read", self.transport.sessionno))  # type: ignore[union-attr]
                super().dataReceived(data)

        port, reactor = self.listen(Factory.forProtocol(Recorded))
        clients = [self.connect(port) for _ in range(3)]
        for client in clients:
            # On loopback, sendall() returns once the server's side has it.
            client.sendall(b"hello")
        waitReadable(port.fileno())
        port.doRead()
        self.assertEqual(
            events, [("made", 0), ("made", 1), ("made", 2), ("read", 0), ("read", 1), ("read", 2)]
        )
        for client in clients:
            self.assertEqual(received(client), b"HELLO")
            self.assertEqual(received(client), b"")
        self.assertEqual(reactor.registered, [("reader", port)])
        self.assertEqual(reactor.getWriters(), [])

    def test_factoryFailureCostsOneConnection(self) -> None:
        """
        A factory that raises for one connection costs that connection (it is
        closed, the error logged), not the port or the other connections.
        """
        count = [0]

        class Flaky(Factory):
            def buildProtocol(self, addr: Any) -> Protocol | None:
                count[0] += 1
                if count[0] == 2:
                    raise ZeroDivisionError()
                if count[0] == 3:
                    return None
                return Responder()

        port, reactor = self.listen(Flaky())
        clients = [self.connect(port) for _ in range(4)]
        port.doRead()
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        served = [t for t in reactor.getReaders() if t is not port]
        self.assertEqual(len(served), 2)
        for transport in served:
            self.addCleanup(transport.connectionLost, Failure(ConnectionDone()))
        self.assertIn(port, reactor.getReaders())
        for refused in clients[1:3]:
            refused.settimeout(5)
            self.assertEqual(refused.recv(10), b"")

    def test_outOfDescriptorsWaits(self) -> None:
        """
        Out of descriptors, the port leaves connections in the backlog and
        tries again after a delay, rather than accepting and closing them;
        the client waiting meanwhile is served.
        """
        port, reactor = self.listen(Factory.forProtocol(Responder))
        listening = port.socket

        class Exhausted:
            def _accept(self) -> Any:
                raise OSError(errno.EMFILE, "Too many open files")

        client = self.connect(port)
        port.socket = Exhausted()
        port.doRead()
        self.assertNotIn(port, reactor.getReaders())
        port.socket = listening
        reactor.advance(port._resourceRetryDelay)
        self.assertIn(port, reactor.getReaders())
        port.doRead()
        [served] = [t for t in reactor.getReaders() if t is not port]
        self.addCleanup(served.connectionLost, Failure(ConnectionDone()))
        self.assertEqual(served.getPeer().port, client.getsockname()[1])

    def test_ipv6Address(self) -> None:
        """
        An IPv6 peer's address is an IPv6Address, as Twisted's port gives it.
        """
        if not socket.has_ipv6:
            raise self.skipTest("no IPv6")
        addresses: list[Any] = []

        class Recorded(Factory):
            def buildProtocol(self, addr: Any) -> Protocol:
                addresses.append(addr)
                return Responder()

        try:
            port, reactor = self.listen(Recorded(), "::1")
        except OSError as e:
            raise self.skipTest(f"no IPv6 loopback: {e}") from e
        client = self.connect(port)
        port.doRead()
        for transport in reactor.getReaders():
            if transport is not port:
                self.addCleanup(transport.connectionLost, Failure(ConnectionDone()))
        [address] = addresses
        self.assertEqual((address.type, address.host, address.port), ("TCP", "::1", client.getsockname()[1]))


@pytest.mark.parametrize("policy", ["rr", "none"])
def test_workers_send_whole_answers(cluster, policy):
    """
    Workers under a handing-off and a self-accepting policy serve with
    PromptCloseServer, and send every byte of many small answers and of
    answers far larger than a socket's buffer, and close after the last, on
    pipelined requests from a real client.
    """
    c = cluster(
        "--workers",
        "2",
        "--scheduling",
        policy,
        "--listen",
        "tcp:0:interface=127.0.0.1",
        "tests.clusterapps.SizesFactory",
    )
    c.waitReady(2)
    with socket.create_connection(c.address(), timeout=20) as client:
        client.sendall(b"transport\nbye\n")
        # Under none, a PromptCloseServer that also counts its end.
        expected = {"rr": b"PromptCloseServer\n", "none": b"_CountedServer\n"}[policy]
        assert client.makefile("rb").read() == expected
    sizes = [1, 100, 20, 8 << 20, 5, 3 << 20, 16]
    for _ in range(4):
        with socket.create_connection(c.address(), timeout=20) as client:
            client.sendall(b"".join(b"%d\n" % size for size in sizes) + b"bye\n")
            answer = b""
            while chunk := client.recv(1 << 20):
                answer += chunk
        assert answer == b"".join(pattern(size) for size in sizes)
    c.signal(signal.SIGTERM)
    assert c.wait() == 0
    assert c.leftovers() == []
