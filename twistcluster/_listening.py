# -*- test-case-name: tests.test_listening -*-
"""
Listening in a worker goes through the master, the way Node makes
C{net.Server.listen} cluster-aware: a worker's listen asks the master for the
socket (C{QueryServer}) and then serves the connections the master hands it.

L{ClusterReactor} is the worker's reactor with C{listenTCP}, C{listenSSL},
C{listenUNIX} and C{listenUDP} routed that way, so Twisted's endpoint strings
(C{tcp:}, C{tcp6:}, C{unix:}, C{ssl:}, wrappers such as C{haproxy:}) work
unchanged.  L{ClusterReactor.install} routes the real reactor's own listen
methods too, so that ordinary Twisted code listens through the master.
"""

from __future__ import annotations

import re
import socket
from typing import Any, Protocol

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort, IProtocolFactory
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import directlyProvides, implementer, providedBy

from ._endpoints import ListenSpec


class MasterChannel(Protocol):
    """
    What a cluster port needs of the worker's control channel.
    """

    def queryServer(self, spec: ListenSpec, index: int) -> Deferred[dict[str, Any]]:
        ...

    def portListening(self, port: ClusterPort) -> None:
        ...

    def portClosed(self, port: ClusterPort) -> None:
        ...

    def connectionAdopted(self, transport: Any) -> None:
        ...

    def portRefused(self, port: Any, reason: Failure) -> None:
        ...


class _Indexes:
    """
    Node's listen index: the n-th listen on one address in a worker gets index
    n, so the n-th listen of every worker shares a socket (and a port-0 port).
    The count restarts once every listen on that address has closed.
    """

    def __init__(self) -> None:
        self._open: dict[str, set[int]] = {}
        self._next: dict[str, int] = {}

    def take(self, spec: ListenSpec) -> int:
        name = spec.key(0).rsplit(":", 1)[0]
        index = self._next.get(name, 0)
        self._next[name] = index + 1
        self._open.setdefault(name, set()).add(index)
        return index

    def release(self, spec: ListenSpec, index: int) -> None:
        name = spec.key(0).rsplit(":", 1)[0]
        still = self._open.get(name, set())
        still.discard(index)
        if not still:
            self._open.pop(name, None)
            self._next.pop(name, None)


@implementer(IListeningPort)
class ClusterPort:
    """
    A listening port in a worker whose socket lives in the master.

    @ivar key: The master's handle key, once the master has answered.
    @ivar sockname: The bound address, once the master has answered.
    """

    _log = Logger()

    def __init__(
        self,
        reactor: Any,
        channel: MasterChannel,
        indexes: _Indexes,
        spec: ListenSpec,
        factory: IProtocolFactory,
    ) -> None:
        self._reactor = reactor
        self._channel = channel
        self._indexes = indexes
        self.spec = spec
        self.factory = factory
        self.key: str | None = None
        self.sockname: dict[str, Any] | None = None
        self._index: int | None = None
        self._closed = False
        self._outcome: Failure | ClusterPort | None = None
        self._waiters: list[Deferred[ClusterPort]] = []

    def startListening(self) -> None:
        self.factory.doStart()
        self._index = self._indexes.take(self.spec)
        self._channel.queryServer(self.spec, self._index).addCallbacks(
            self._granted, self._refused
        )

    def whenListening(self) -> Deferred[ClusterPort]:
        """
        Fires with this port once the master has granted the listen, or fails
        with the master's reason.
        """
        if self._outcome is not None:
            return succeed(self._outcome) if not isinstance(self._outcome, Failure) else _failed(self._outcome)
        waiter: Deferred[ClusterPort] = Deferred()
        self._waiters.append(waiter)
        return waiter

    def _granted(self, answer: dict[str, Any]) -> None:
        if self._closed:
            return
        self.key = answer["key"]
        self.sockname = answer["sockname"]
        self._channel.portListening(self)
        self._settle(self)

    def _refused(self, reason: Failure) -> None:
        self._closed = True
        self._release()
        self.factory.doStop()
        reason = listenError(self.spec, reason)
        self._channel.portRefused(self, reason)
        self._settle(reason)

    def _settle(self, outcome: Failure | ClusterPort) -> None:
        self._outcome = outcome
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if isinstance(outcome, Failure):
                waiter.errback(outcome)
            else:
                waiter.callback(outcome)

    def connectionReceived(self, fd: int) -> bool:
        """
        Serve a connection the master handed over.  The caller closes C{fd}
        (C{adoptStreamConnection} works on a duplicate).

        @return: Whether the factory took it.
        """
        if self._closed:
            return False
        transport = self._reactor.adoptStreamConnection(fd, self.spec.family, self.factory)
        if transport is None:
            return False
        self._channel.connectionAdopted(transport)
        return True

    @property
    def closed(self) -> bool:
        return self._closed

    def stopListening(self) -> Deferred[None]:
        if not self._closed:
            self._closed = True
            if self.key is not None:
                self._channel.portClosed(self)
            self._release()
            self.factory.doStop()
        return succeed(None)

    loseConnection = stopListening

    def _release(self) -> None:
        if self._index is not None:
            self._indexes.release(self.spec, self._index)
            self._index = None

    def getHost(self) -> IPv4Address | IPv6Address | UNIXAddress:
        if self.spec.kind == "unix":
            return UNIXAddress(self.spec.address)
        address = self.sockname or {"address": self.spec.address, "port": self.spec.port}
        if self.spec.family == socket.AF_INET6:
            return IPv6Address("TCP", address["address"], address["port"])
        return IPv4Address("TCP", address["address"], address["port"])


def _failed(reason: Failure) -> Deferred[Any]:
    d: Deferred[Any] = Deferred()
    d.errback(reason)
    return d


def listenError(spec: ListenSpec, reason: Failure) -> Failure:
    """
    The master's refusal of a listen, as the error a listen in one process
    gives: L{CannotListenError}, whose C{socketError} has the master's errno
    (C{EADDRINUSE}, C{EACCES}, ...) when a bind failed.
    """
    if reason.check(CannotListenError):
        return reason
    text = reason.getErrorMessage()
    found = re.search(r"\[Errno (\d+)\] ([^.]*)", text)
    error: Exception = OSError(int(found.group(1)), found.group(2)) if found else reason.value
    address = spec.address or "any"
    return Failure(CannotListenError(address, spec.port if spec.port >= 0 else address, error))


#: The reactor methods a worker routes through the master.
ROUTED_LISTENS = ("listenTCP", "listenSSL", "listenUNIX", "listenUDP")


class DirectReactor:
    """
    The real reactor with its own, unrouted listen methods: a listen of one
    worker alone (Node's C{exclusive: true}).
    """

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor
        directlyProvides(self, *providedBy(reactor))

    def __getattr__(self, name: str) -> Any:
        if name in ROUTED_LISTENS:
            return getattr(type(self._reactor), name).__get__(self._reactor)
        return getattr(self._reactor, name)


class ClusterReactor:
    """
    The worker's reactor, with its stream listens routed through the master.
    Everything else is the real reactor's.
    """

    def __init__(self, reactor: Any, channel: MasterChannel) -> None:
        self._reactor = reactor
        self._channel = channel
        self._indexes = _Indexes()
        self._ports: list[Any] = []
        directlyProvides(self, *providedBy(reactor))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reactor, name)

    def install(self) -> None:
        """
        Route the real reactor's own listen methods through the master, so
        that C{reactor.listenTCP(...)} and C{serverFromString(reactor, ...)}
        in any code of this worker listen through it, as Node makes
        C{net.Server.listen} cluster-aware in a worker.
        """
        for name in ROUTED_LISTENS:
            setattr(self._reactor, name, getattr(self, name))

    @property
    def direct(self) -> DirectReactor:
        """
        The reactor with its own listen methods, for a listen that bypasses
        the master.
        """
        return DirectReactor(self._reactor)

    @property
    def ports(self) -> list[Any]:
        """
        Every listen made through this reactor and not stopped yet.
        """
        self._ports = [p for p in self._ports if not p.closed]
        return list(self._ports)

    def _listen(self, spec: ListenSpec, factory: IProtocolFactory) -> ClusterPort:
        port = ClusterPort(self._reactor, self._channel, self._indexes, spec, factory)
        self._ports.append(port)
        port.startListening()
        return port

    def listenUDP(
        self, port: int, protocol: Any, interface: str = "", maxPacketSize: int = 8192
    ) -> Any:
        """
        Ask the master for a shared datagram socket (Node: UDP is always
        shared, never round-robin) and adopt it.
        """
        from ._datagram import ClusterDatagramPort

        datagramPort = ClusterDatagramPort(
            self._reactor, self._channel, self._indexes,
            ListenSpec("udp", interface, int(port)), protocol, maxPacketSize,
        )
        self._ports.append(datagramPort)
        datagramPort.startListening()
        return datagramPort

    def listenTCP(
        self, port: int, factory: IProtocolFactory, backlog: int = 50, interface: str = ""
    ) -> ClusterPort:
        return self._listen(ListenSpec.forTCP(port, backlog, interface), factory)

    def listenSSL(
        self,
        port: int,
        factory: IProtocolFactory,
        contextFactory: Any,
        backlog: int = 50,
        interface: str = "",
    ) -> ClusterPort:
        # As posixbase does it: TLS in memory over a plain TCP connection, so
        # the master passes raw sockets and each worker does its own TLS.
        from twisted.protocols.tls import TLSMemoryBIOFactory

        return self.listenTCP(
            port, TLSMemoryBIOFactory(contextFactory, False, factory), backlog, interface
        )

    def listenUNIX(
        self,
        address: str,
        factory: IProtocolFactory,
        backlog: int = 50,
        mode: int = 0o666,
        wantPID: int = 0,
    ) -> ClusterPort:
        return self._listen(ListenSpec.forUNIX(address, backlog, mode), factory)
