# -*- test-case-name: tests.test_transport, tests.test_balance, tests.test_shared -*-
"""
Ports on a listening socket made elsewhere: L{AdoptedUNIXPort}, for a UNIX
listening socket others share (made by the master for a worker, by systemd
or an earlier image for the master), and a worker's L{ServingTCPPort}, the
shared L{AcceptLoop} serving its own connections; L{adoptListeningSocket}
picks a worker's port for a socket the master sent.

The master's hand-off ports are in L{twistcluster._master.handoffports}.
"""

from __future__ import annotations

import os
import socket
from typing import Any, cast

from twisted.internet.fdesc import setNonBlocking
from twisted.internet.interfaces import IDelayedCall, IListeningPort, IProtocolFactory, IReactorTime
from twisted.internet.protocol import DatagramProtocol
from twisted.python.failure import Failure

from .acceptloop import AcceptLoop
from .balance import ASIDE_EVERY, STEP_ASIDE, AcceptBalance
from .endpoints import ListenSpec
from .reactors import IAcceptingReactor, IServingReactor
from .transport import PromptCloseServer
from .twistedinternals import (
    SharedSocketPort,
    TCPPort,
    UNIXPort,
    adoptTCPPort,
    adoptUNIXPort,
    peerAddress,
    reserveDescriptor,
    takeAdoptedSocket,
)


class AdoptedUNIXPort(SharedSocketPort, UNIXPort):
    """
    A UNIX port on a listening socket that someone else made and others
    share.  Twisted's own adopted UNIX port would C{chmod} the file and
    C{listen()} again with its own mode and backlog, C{shutdown()} the socket
    when it stops (ending it for every process that shares it) and remove
    the file; this one does none of that.
    """

    def startListening(self) -> None:
        skt = takeAdoptedSocket(self)
        assert skt is not None, "only for adopted sockets"
        reserveDescriptor()
        assert self.factory is not None
        self.factory.doStart()
        self.connected = True
        self.socket = skt
        self.fileno = skt.fileno  # type: ignore[method-assign]  # as Twisted's ports do
        self.numberAccepts = 100
        self.startReading()

    #: The socket file to remove when it stops: set when this process bound
    #: it (in an earlier image, before an upgrade), never for a socket it
    #: only shares or inherited.
    ownedPath: str | None = None

    def connectionLost(self, reason: Failure) -> None:
        # tcp.Port's, not unix.Port's: the file belongs to whoever bound it.
        if self.ownedPath is not None:
            try:
                os.unlink(self.ownedPath)
            except FileNotFoundError:
                pass
        TCPPort.connectionLost(self, reason)


class _CountedServer(PromptCloseServer):
    """
    A connection of a port that balances its accepting: its end is counted.
    """

    server: ServingTCPPort

    def connectionLost(self, reason: Failure) -> None:
        try:
            super().connectionLost(reason)
        finally:
            balance = self.server.balance
            assert balance is not None
            balance.closed()


class ServingTCPPort(AcceptLoop, TCPPort):
    """
    A worker's TCP port on a listening socket it shares (policies C{none} and
    C{reuseport}): Twisted's port with the master's accept loop, which
    accepts a whole burst in one pass of the reactor where Twisted's adapts
    down to as few as one accept per pass, and L{PromptCloseServer}
    connections, which it opens at the end of the pass.

    Unlike Twisted's port it leaves connections in the backlog while
    descriptors run out (another worker may have some), rather than
    accepting and closing them.

    With a L{balance} (C{none}), a worker more than
    L{twistcluster._common.balance.MARGIN} connections ahead of the least loaded
    worker on the socket steps aside, at most once every L{ASIDE_EVERY}
    seconds: it stops accepting, leaving the backlog to the others, for
    L{STEP_ASIDE} seconds; then it accepts a whole pass if none of them
    accepted anything meanwhile, and otherwise looks at their loads again.
    """

    reactor: IAcceptingReactor
    transport: type[PromptCloseServer] = PromptCloseServer
    sessionno: int
    #: A burst in one pass, without keeping the open connections waiting long.
    _acceptBatch = 64
    #: The connections accepted in this pass, to be opened at its end.
    _accepted: list[PromptCloseServer] | None = None
    balance: AcceptBalance | None = None
    #: The reactor as a clock, read after every accept once there is a
    #: L{balance}.
    _clock: IReactorTime
    _steppedAside: IDelayedCall | None = None
    _acceptedBefore = 0
    _lastAside = float("-inf")
    #: The pass after stepping aside (if no one else accepted meanwhile)
    #: accepts whatever the table says.
    _mustAccept = False

    def balanceWith(self, balance: AcceptBalance) -> None:
        """
        Accept with an eye on the other workers' loads (before listening).
        """
        self.balance = balance
        self._clock = self.reactor
        self.transport = _CountedServer

    def doRead(self) -> None:
        """
        Accept a burst of connections, then open each: what its peer has sent
        by then is served at once (L{PromptCloseServer.opened}); the burst's
        accepts give the first ones' peers time to send it.
        """
        if not self._mustAccept and self._shouldStepAside():
            self._stepAside()
            return
        accepted: list[PromptCloseServer] = []
        self._accepted = accepted
        try:
            self._acceptSome(self._acceptBatch, stopWhenPaused=True)
        finally:
            self._accepted = None
            self._mustAccept = False
            for transport in accepted:
                transport.opened()

    def _shouldStepAside(self) -> bool:
        # Asked after every accept: the clock first, as within ASIDE_EVERY
        # of stepping aside (most of the time under load) the table need
        # not be read.
        balance = self.balance
        return (
            balance is not None and self._clock.seconds() - self._lastAside >= ASIDE_EVERY and balance.ahead()
        )

    def _stepAside(self) -> None:
        assert self.balance is not None
        self._holdingBack = True
        self.stopReading()
        if self._steppedAside is not None:
            return
        self._lastAside = self._clock.seconds()
        self._acceptedBefore = self.balance.acceptedByAll()
        self._steppedAside = self._clock.callLater(STEP_ASIDE, self._stepBackIn)

    def _stepBackIn(self) -> None:
        assert self.balance is not None
        self._steppedAside = None
        self._holdingBack = False
        # If no one else took a connection meanwhile, take them regardless.
        self._mustAccept = self.balance.acceptedByAll() == self._acceptedBefore
        if self._waitingForResources is None and self.connected and not self.disconnecting:
            self.startReading()

    def _connectionAccepted(self, fd: int, address: Any) -> None:
        skt = socket.socket(self.addressFamily, self.socketType, 0, fd)
        try:
            if len(address) == 4:
                # IPv6: the scope id in the host, as Twisted gives it.
                host = socket.getnameinfo(address, socket.NI_NUMERICHOST | socket.NI_NUMERICSERV)
                address = (host[0], *address[1:])
            assert self.factory is not None
            protocol = self.factory.buildProtocol(peerAddress(self, address))
            if protocol is None:
                skt.close()
                return
            sessionno = self.sessionno
            self.sessionno = sessionno + 1
            transport = self.transport(skt, protocol, address, self, sessionno, self.reactor)
        except Exception:
            # As Twisted's port: a factory's failure costs this connection,
            # not the port.
            self._log.failure("Unhandled error while accepting a connection", Failure())
            skt.close()
            return
        balance = self.balance
        if balance is not None:
            balance.opened()
        try:
            protocol.makeConnection(transport)
        except Exception:
            # As Twisted's port: logged, and the connection goes on.
            self._log.failure("Unhandled error while accepting a connection", Failure())
        if self._accepted is None:
            transport.opened()
        else:
            self._accepted.append(transport)
        if not self._mustAccept and self._shouldStepAside():
            # The rest of the burst is for the others.
            self._stepAside()

    def connectionLost(self, reason: Failure) -> None:
        if self._steppedAside is not None:
            self._steppedAside.cancel()
            self._steppedAside = None
        if self.balance is not None:
            self.balance.stop()
        super().connectionLost(reason)


def adoptListeningSocket(
    reactor: IServingReactor,
    fd: int,
    spec: ListenSpec,
    serving: IProtocolFactory | DatagramProtocol,
    maxPacketSize: int,
    balance: AcceptBalance | None = None,
    listenBacklog: int | None = None,
) -> IListeningPort:
    """
    Serve on a listening socket the master sent: accept connections on it
    for C{serving} (a protocol factory), or read its datagrams with it (a
    datagram protocol).  The caller closes C{fd}; the port has a duplicate.

    @param balance: For a TCP socket under C{none}: the other workers'
        loads, to accept with an eye on.
    @param listenBacklog: The socket is bound but not listening yet
        (C{reuseport}): listen on it, with this backlog, first.
    """
    setNonBlocking(fd)
    if listenBacklog is not None and spec.socketType == socket.SOCK_STREAM:
        bound = socket.socket(spec.family, socket.SOCK_STREAM, 0, fd)
        try:
            bound.listen(listenBacklog)
        finally:
            bound.detach()
    if spec.kind == "udp":
        return reactor.adoptDatagramPort(fd, spec.family, cast(DatagramProtocol, serving), maxPacketSize)
    factory = cast(IProtocolFactory, serving)
    port: AdoptedUNIXPort | ServingTCPPort
    if spec.kind == "unix":
        # Not reactor.adoptStreamPort: its UNIX port would shutdown() the
        # socket every worker shares when this one stops.
        port = adoptUNIXPort(AdoptedUNIXPort, reactor, fd, factory)
    else:
        # What reactor.adoptStreamPort does, with the worker's own TCP port.
        port = adoptTCPPort(ServingTCPPort, reactor, fd, spec.family, factory)
        if balance is not None:
            port.balanceWith(balance)
    port.startListening()
    return port
