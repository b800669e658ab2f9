# -*- test-case-name: tests.test_cluster_api, tests.test_node_listen -*-
"""
Listening in a worker goes through the master, the way Node makes
C{net.Server.listen} cluster-aware: a worker's listen asks the master for the
socket (C{QueryServer}) and then serves the connections the master hands it
(L{twistcluster._worker.clusterport}).

L{ClusterReactor} is the worker's reactor with C{listenTCP}, C{listenSSL},
C{listenUNIX} and C{listenUDP} routed that way, so Twisted's endpoint strings
(C{tcp:}, C{tcp6:}, C{unix:}, C{ssl:}, wrappers such as C{haproxy:}) work
unchanged.  L{ClusterReactor.install} routes the real reactor's own listen
methods too, so that ordinary Twisted code listens through the master.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort, IProtocolFactory
from zope.interface import directlyProvides, providedBy

from .._common.endpoints import ListenSpec, isDatagram, parseDatagram
from .._common.reactors import IWorkerReactor
from .clusterport import ClusterPort, ListenIndexes, MasterChannel
from .proxyheader import loggingRefusals
from .routing import ROUTED_LISTENS, CommandLineListens, DirectReactor


class ClusterReactor:
    """
    The worker's reactor, with its stream listens routed through the master.
    Everything else is the real reactor's.

    @ivar listens: Which listens go through the master (a command-line
        worker's); L{None}: every one (Node's, for the cluster API).
    """

    def __init__(self, reactor: IWorkerReactor, channel: MasterChannel) -> None:
        self._reactor = reactor
        self._channel = channel
        self._indexes = ListenIndexes()
        self._ports: list[ClusterPort] = []
        self.listens: CommandLineListens | None = None
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
    def ports(self) -> list[ClusterPort]:
        """
        Every listen made through this reactor and not stopped yet.
        """
        self._ports = [p for p in self._ports if not p.closed]
        return list(self._ports)

    def _throughMaster(self, spec: ListenSpec) -> bool:
        return self.listens is None or self.listens.throughMaster(spec, self._indexes.peek(spec))

    def listenThroughMaster(self, spec: ListenSpec, factory: Any, maxPacketSize: int = 8192) -> ClusterPort:
        """
        Listen on C{spec} through the master, whichever listens go through it.
        """
        factory = loggingRefusals(factory)
        port = ClusterPort(self._reactor, self._channel, self._indexes, spec, factory, maxPacketSize)
        self._ports.append(port)
        port.startListening()
        return port

    def listenTCP(
        self, port: int, factory: IProtocolFactory, backlog: int = 50, interface: str = ""
    ) -> IListeningPort:
        spec = ListenSpec.forTCP(port, backlog, interface)
        if not self._throughMaster(spec):
            return self.direct.listenTCP(port, factory, backlog, interface)  # type: ignore[no-any-return]
        return self.listenThroughMaster(spec, factory)

    def listenSSL(
        self,
        port: int,
        factory: IProtocolFactory,
        contextFactory: Any,
        backlog: int = 50,
        interface: str = "",
    ) -> IListeningPort:
        # As posixbase does it: TLS in memory over a plain TCP connection, so
        # the master passes raw sockets and each worker does its own TLS.
        from twisted.protocols.tls import TLSMemoryBIOFactory

        return self.listenTCP(port, TLSMemoryBIOFactory(contextFactory, False, factory), backlog, interface)

    def listenUNIX(
        self,
        address: str,
        factory: IProtocolFactory,
        backlog: int = 50,
        mode: int = 0o666,
        wantPID: int = 0,
    ) -> IListeningPort:
        spec = ListenSpec.forUNIX(address, backlog, mode)
        if not self._throughMaster(spec):
            return self.direct.listenUNIX(address, factory, backlog, mode, wantPID)  # type: ignore[no-any-return]
        return self.listenThroughMaster(spec, factory)

    def listenUDP(
        self, port: int, protocol: Any, interface: str = "", maxPacketSize: int = 8192
    ) -> IListeningPort:
        spec = ListenSpec.forUDP(port, interface)
        if not self._throughMaster(spec):
            return self.direct.listenUDP(port, protocol, interface, maxPacketSize)  # type: ignore[no-any-return]
        return self.listenThroughMaster(spec, protocol, maxPacketSize)


def listenOn(reactor: ClusterReactor, description: str, serving: Any) -> Deferred[ClusterPort]:
    """
    Listen as C{description} says, through the master: a Twisted server
    endpoint for C{serving}, a protocol factory; or C{udp:} for C{serving},
    a datagram protocol.
    """
    if isDatagram(description):
        spec, maxPacketSize = parseDatagram(description)
        return succeed(reactor.listenThroughMaster(spec, serving, maxPacketSize))
    listening: Deferred[ClusterPort] = serverFromString(reactor, description).listen(serving)
    return listening
