"""
The Twisted private names twistcluster relies on (L{twistcluster._common.twistedinternals})
are still there, and still mean what it takes them to mean, in the installed Twisted.
"""

from __future__ import annotations

import inspect
import os
import socket
import types

from twisted.internet import abstract, process, tcp, unix
from twisted.internet.address import IPv4Address
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import formatEvent, globalLogPublisher
from twisted.protocols import amp
from twisted.python.failure import Failure
from twisted.python.reflect import qual
from twisted.trial.unittest import SynchronousTestCase
from twisted.web import http

from twistcluster._common import twistedinternals as internals
from twisted import version as twistedVersion


class PrivateNamesTests(SynchronousTestCase):
    def instanceOf(self, owner: type) -> object:
        """
        A real instance of C{owner}, so that names its C{__init__} sets count.
        """
        reactor = MemoryReactorClock()
        if owner is tcp.Server or owner is unix.Server:
            family = socket.AF_UNIX if owner is unix.Server else socket.AF_INET
            ours, theirs = self.connectedPair(family)
            if owner is unix.Server:
                return internals.adoptUNIXConnection(
                    unix.Server, reactor, ours.fileno(), Factory.forProtocol(Protocol)
                )
            return internals.adoptTCPConnection(
                tcp.Server, reactor, ours.fileno(), family, Factory.forProtocol(Protocol)
            )
        if owner is tcp.Port:
            return tcp.Port(0, Factory(), interface="127.0.0.1", reactor=reactor)
        if owner is unix.Port:
            return unix.Port(self.mktemp(), Factory(), reactor=reactor)
        if owner is abstract.FileDescriptor:
            return abstract.FileDescriptor(reactor)
        if owner is amp.AMP:
            return amp.AMP()
        if owner is amp.BinaryBoxProtocol:
            return amp.BinaryBoxProtocol(amp.BoxDispatcher(amp.CommandLocator()))
        if owner is internals.HAProxyProtocolWrapper:
            return internals.HAProxyWrappingFactory(Factory.forProtocol(Protocol)).buildProtocol(None)
        if owner is http.HTTPFactory:
            return http.HTTPFactory()
        if owner is socket.socket:
            skt = socket.socket()
            self.addCleanup(skt.close)
            return skt
        raise AssertionError(f"no instance of {qual(owner)} to check its private names on")

    def connectedPair(self, family: int) -> tuple[socket.socket, socket.socket]:
        if family == socket.AF_UNIX:
            ours, theirs = socket.socketpair()
        else:
            listening = socket.create_server(("127.0.0.1", 0))
            self.addCleanup(listening.close)
            theirs = socket.create_connection(listening.getsockname())
            ours, _ = listening.accept()
        for skt in (ours, theirs):
            self.addCleanup(skt.close)
        ours.setblocking(False)
        return ours, theirs

    def test_everyNameIsThere(self) -> None:
        """
        Every private name the module uses exists in the installed Twisted;
        a failure names each one that moved.
        """
        missing = []
        for owner, name in internals.PRIVATE_NAMES:
            if isinstance(owner, types.ModuleType):
                where, present = owner.__name__, hasattr(owner, name)
            elif owner is process.Process:
                # Making one forks a child: read what its __init__ sets.
                where, present = qual(owner), f"self.{name} = " in inspect.getsource(owner.__init__)
            else:
                assert isinstance(owner, type)
                where, present = qual(owner), hasattr(self.instanceOf(owner), name)
            if not present:
                missing.append(f"{where}.{name}")
        self.assertEqual(
            missing,
            [],
            f"Twisted {twistedVersion.short()} moved these private names that "
            f"twistcluster/_common/twistedinternals.py uses: {', '.join(missing)}",
        )

    def test_adoptedPortGivesUpItsSocket(self) -> None:
        """
        An adopted port holds the socket it was made from until it is taken.
        """
        listening = socket.create_server(("127.0.0.1", 0))
        self.addCleanup(listening.close)
        listening.setblocking(False)
        port = internals.adoptTCPPort(
            tcp.Port, MemoryReactorClock(), listening.fileno(), socket.AF_INET, Factory()
        )
        skt = internals.takeAdoptedSocket(port)
        assert skt is not None
        self.addCleanup(skt.close)
        self.assertEqual(skt.getsockname(), listening.getsockname())
        self.assertIsNone(internals.takeAdoptedSocket(port))

    def test_rawAcceptAndPeerAddress(self) -> None:
        """
        The raw accept gives a descriptor and the peer's address, which the
        port turns into the address object its protocols get.
        """
        listening = socket.create_server(("127.0.0.1", 0))
        self.addCleanup(listening.close)
        client = socket.create_connection(listening.getsockname())
        self.addCleanup(client.close)
        fd, address = internals.rawAccept(listening)()
        os.close(fd)
        port = tcp.Port(0, Factory(), interface="127.0.0.1", reactor=MemoryReactorClock())
        self.assertEqual(
            internals.peerAddress(port, address), IPv4Address("TCP", "127.0.0.1", client.getsockname()[1])
        )

    def test_transportState(self) -> None:
        """
        A transport's unsent data and its aborting are read where they are.
        """
        ours, theirs = self.connectedPair(socket.AF_INET)
        transport = self.instanceOf(tcp.Server)
        assert isinstance(transport, tcp.Server)
        self.addCleanup(transport.connectionLost, Failure(Exception("test over")))
        self.assertFalse(internals.hasUnsentData(transport))
        transport.write(b"x")
        self.assertTrue(internals.hasUnsentData(transport))
        self.assertFalse(internals.isAborting(transport))
        transport.abortConnection()
        self.assertTrue(internals.isAborting(transport))

    def test_descriptorsQueueAndDataIsDelivered(self) -> None:
        """
        A descriptor sent over a UNIX transport waits in its queue; data
        handed to L{internals.deliverReceivedData} reaches the protocol, and
        an empty read ends the connection.
        """
        transport = self.instanceOf(unix.Server)
        assert isinstance(transport, unix.Server)
        self.addCleanup(transport.connectionLost, Failure(Exception("test over")))
        transport.sendFileDescriptor(0)
        transport.sendFileDescriptor(1)
        self.assertEqual(internals.queuedDescriptors(transport), [0, 1])
        received: list[bytes] = []
        transport.protocol.dataReceived = received.append  # type: ignore[method-assign]
        self.assertIsNone(internals.deliverReceivedData(transport, b"box"))
        self.assertEqual(received, [b"box"])
        self.assertIsNotNone(internals.deliverReceivedData(transport, b""))

    def test_proxyHeaderRead(self) -> None:
        """
        The PROXY wrapper has read a header once one has arrived, not before,
        and not after a refused one.
        """
        for header, expected in ((b"PROXY TCP4 203.0.113.7 192.0.2.1 4000 443\r\n", True), (b"GET /", False)):
            wrapper = internals.HAProxyWrappingFactory(Factory.forProtocol(Protocol)).buildProtocol(None)
            wrapper.makeConnection(StringTransport())
            self.assertFalse(internals.proxyHeaderRead(wrapper))
            wrapper.dataReceived(header)
            self.assertEqual(internals.proxyHeaderRead(wrapper), expected)

    def test_quietPortSaysNothingWhenItStops(self) -> None:
        """
        A port with L{internals.QuietPort} logs no line when it stops;
        Twisted's own does.
        """

        class Quiet(internals.QuietPort, tcp.Port):
            pass

        for portClass, expected in ((tcp.Port, 1), (Quiet, 0)):
            events: list[dict[str, object]] = []
            globalLogPublisher.addObserver(events.append)
            self.addCleanup(globalLogPublisher.removeObserver, events.append)
            port = portClass(0, Factory(), interface="127.0.0.1", reactor=MemoryReactorClock())
            port.startListening()
            port.connectionLost(Failure(Exception("stopped")))
            globalLogPublisher.removeObserver(events.append)
            closed = [e for e in events if "Port" in formatEvent(e) and "Closed" in formatEvent(e)]
            self.assertEqual(len(closed), expected, portClass)

    def test_sharedSocketPortDoesNotShutDown(self) -> None:
        """
        A port with L{internals.SharedSocketPort} closes its socket without
        C{shutdown()}: a duplicate of it still accepts.
        """

        class Shared(internals.SharedSocketPort, tcp.Port):
            pass

        listening = socket.create_server(("127.0.0.1", 0))
        self.addCleanup(listening.close)
        listening.setblocking(False)
        port = internals.adoptTCPPort(
            Shared, MemoryReactorClock(), listening.fileno(), socket.AF_INET, Factory()
        )
        port.startListening()
        port.connectionLost(Failure(Exception("stopped")))
        client = socket.create_connection(listening.getsockname(), timeout=5)
        self.addCleanup(client.close)
        listening.setblocking(True)
        listening.settimeout(5)
        accepted, _ = listening.accept()
        accepted.close()
