# -*- test-case-name: tests.test_handoff, tests.test_transport, tests.test_balance -*-
"""
Listening ports with a lean accept loop.  The master's ports pass each connection
on as a bare file descriptor, never building a transport or a protocol for
a socket the master only hands off; a worker's L{ServingTCPPort} serves its
connections itself.

Also L{AdoptedUNIXPort}, for a UNIX listening socket made elsewhere (by the
master for a worker, or by systemd for the master), and
L{adoptListeningSocket}, which picks a worker's port for a socket the master
sent.
"""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Callable
from typing import Any, cast

from twisted.internet.fdesc import setNonBlocking
from twisted.internet.interfaces import (
    IDelayedCall,
    IListeningPort,
    IProtocolFactory,
    IReactorFDSet,
    IReactorSocket,
    IReactorTime,
)
from twisted.internet.protocol import DatagramProtocol, Factory
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.reflect import qual

from .balance import ASIDE_EVERY, STEP_ASIDE, AcceptBalance
from .endpoints import ListenSpec
from .sockets import bindablePath, removeStaleSocketFile
from .transport import PromptCloseServer
from .twistedinternals import (
    QuietPort,
    SharedSocketPort,
    TCPPort,
    UNIXPort,
    adoptTCPPort,
    adoptUNIXPort,
    peerAddress,
    rawAccept,
    reserveDescriptor,
    takeAdoptedSocket,
)

#: accept() errors that mean "out of resources": stop reading, retry later.
_RESOURCE_ERRORS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
#: accept() errors about one connection only (it died in the backlog).
_TRANSIENT_ERRORS = frozenset({errno.ECONNABORTED, errno.EPERM, errno.EPROTO, errno.EINTR})


class _SilentFactory(Factory):
    """
    The factory of a socket the master listens on for its workers: the
    accept loop hands sockets off, so it builds no protocol.  Its prefix is
    what Twisted's C{starting on} line names (not this class).
    """

    noisy = False

    def logPrefix(self) -> str:
        return "twistcluster master"


class _AcceptLoop:
    """
    The accept loop shared by the hand-off ports and L{ServingTCPPort}.

    @ivar _connectionAccepted: Called with each accepted socket's file
        descriptor, which it then owns, and the peer's address.
    @ivar _acceptedSome: If set, called once after each pass of the loop
        that accepted anything (the master sends the pass's hand-offs then).
    @ivar _resourceRetryDelay: Seconds to wait after EMFILE/ENFILE before
        accepting again: no busy loop, and no accept-and-close either.
    @ivar accepted: Connections accepted so far (added up once per batch).
    @ivar pauses: How often accepting paused because too many accepted
        connections waited for a worker (backpressure).
    @ivar resourceErrors: How many C{accept()} calls failed for lack of
        descriptors or memory (EMFILE, ENFILE, ENOBUFS, ENOMEM).
    """

    _connectionAccepted: Callable[[int, Any], object]
    _acceptedSome: Callable[[], object] | None = None
    _resourceRetryDelay = 0.1
    _acceptBatch = 256
    _paused = False
    #: Leave the rest of the backlog to others for now (L{ServingTCPPort}).
    _holdingBack = False
    _waitingForResources: IDelayedCall | None = None
    _outOfResourcesSince: str | None = None
    accepted = 0
    pauses = 0
    resourceErrors = 0
    # What the Twisted port this is mixed into provides.
    reactor: IReactorFDSet
    socket: socket.socket
    connected: bool | int
    startReading: Callable[[], None]
    stopReading: Callable[[], None]
    _log = Logger()

    def doRead(self) -> None:
        self._acceptSome(self._acceptBatch, stopWhenPaused=True)

    def drainBacklog(self) -> None:
        """
        Accept every connection already waiting in the kernel, even past the
        queue limit, so that closing the port does not reset them.
        """
        while self._acceptSome(self._acceptBatch, stopWhenPaused=False):
            pass

    def _acceptSome(self, limit: int, stopWhenPaused: bool) -> bool:
        """
        Accept up to C{limit} connections.

        @return: Whether more may be waiting.
        """
        # The raw descriptor, so no Python socket object is made per connection.
        accept = rawAccept(self.socket)
        connectionAccepted = self._connectionAccepted
        count = 0
        try:
            for _ in range(limit):
                try:
                    fd, address = accept()
                except BlockingIOError:
                    return False
                except OSError as e:
                    if e.errno in _TRANSIENT_ERRORS:
                        continue
                    if e.errno in _RESOURCE_ERRORS:
                        self._outOfResources(e)
                        return False
                    raise
                count += 1
                if self._outOfResourcesSince is not None:
                    self._log.info("accepting again after {error}", error=self._outOfResourcesSince)
                    self._outOfResourcesSince = None
                connectionAccepted(fd, address)
                if stopWhenPaused and (self._paused or self._holdingBack):
                    return False
            return True
        finally:
            # Counted once per batch: a statistic, not a cost per connection.
            self.accepted += count
            if count and self._acceptedSome is not None:
                self._acceptedSome()

    def pauseAccepting(self) -> None:
        """
        Leave new connections in the kernel backlog for now.
        """
        if not self._paused:
            self._paused = True
            self.pauses += 1
            self.stopReading()

    def resumeAccepting(self) -> None:
        if self._paused:
            self._paused = False
            if self._waitingForResources is None and self.connected:
                self.startReading()

    def _outOfResources(self, error: OSError) -> None:
        self.resourceErrors += 1
        if self._outOfResourcesSince is None:
            # Once per episode: it may last, and we retry ten times a second.
            self._outOfResourcesSince = errno.errorcode.get(error.errno or 0, str(error))
            self._log.warn(
                "accept() failed: {error}; retrying every {delay}s until descriptors are free",
                error=self._outOfResourcesSince,
                delay=self._resourceRetryDelay,
            )
        self.stopReading()
        # Twisted types a port's reactor by IReactorFDSet; every reactor
        # that runs ports is also a clock.
        clock = cast(IReactorTime, self.reactor)
        self._waitingForResources = clock.callLater(self._resourceRetryDelay, self._resourcesMayBeBack)

    def _resourcesMayBeBack(self) -> None:
        self._waitingForResources = None
        if not self._paused and self.connected:
            self.startReading()

    def connectionLost(self, reason: Failure) -> None:
        if self._waitingForResources is not None:
            self._waitingForResources.cancel()
            self._waitingForResources = None
        super().connectionLost(reason)  # type: ignore[misc]


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


class ServingTCPPort(_AcceptLoop, TCPPort):
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
        self._clock = cast(IReactorTime, self.reactor)
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
        self._accepted = accepted = cast(list[PromptCloseServer], [])
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


class _HandOffLoop(_AcceptLoop):
    """
    The accept loop of a master's port.
    """

    def logPrefix(self) -> str:
        # The reactor asks for it at every read; Twisted's port would make
        # its factory's qualified name each time.
        return _HAND_OFF_PREFIX


_HAND_OFF_PREFIX = qual(_SilentFactory)


class HandOffTCPPort(QuietPort, _HandOffLoop, TCPPort):
    pass


class HandOffUNIXPort(QuietPort, _HandOffLoop, UNIXPort):
    pass


class AdoptedHandOffUNIXPort(QuietPort, _HandOffLoop, AdoptedUNIXPort):
    pass


#: A port of the master's, which hands off what it accepts.
HandOffPort = HandOffTCPPort | HandOffUNIXPort | AdoptedHandOffUNIXPort


def listenForHandOff(
    reactor: IReactorFDSet,
    spec: ListenSpec,
    connectionAccepted: Callable[[int, Any], object],
    adopted: int | None = None,
    acceptedSome: Callable[[], object] | None = None,
) -> HandOffPort:
    """
    Bind and listen as C{spec} says (or adopt the inherited socket it names);
    each accepted connection's descriptor and peer address go to
    C{connectionAccepted}, and C{acceptedSome} is called after each pass of
    the accept loop that accepted any.

    @param adopted: The listening socket to accept on (an earlier image of
        the master made it), instead of binding; it is duplicated.
    @raise twisted.internet.error.CannotListenError: The bind failed.
    """
    port: HandOffPort
    fd = spec.fd if adopted is None else adopted
    if fd >= 0:
        setNonBlocking(fd)
    if fd >= 0 and spec.kind == "unix":
        port = adoptUNIXPort(AdoptedHandOffUNIXPort, reactor, fd, _SilentFactory())
        if spec.fd < 0:
            port.ownedPath = spec.address
    elif fd >= 0:
        port = adoptTCPPort(HandOffTCPPort, reactor, fd, spec.family, _SilentFactory())
    elif spec.kind == "unix":
        path = bindablePath(spec.address)
        removeStaleSocketFile(path)
        port = HandOffUNIXPort(path.encode(), _SilentFactory(), spec.backlog, spec.mode, reactor)
    else:
        port = HandOffTCPPort(spec.port, _SilentFactory(), spec.backlog, spec.address, reactor)
    port._connectionAccepted = connectionAccepted
    port._acceptedSome = acceptedSome
    port.startListening()
    return port


def adoptListeningSocket(
    reactor: IReactorSocket,
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
    # A reactor that adopts sockets runs descriptors.
    descriptors = cast(IReactorFDSet, reactor)
    port: AdoptedUNIXPort | ServingTCPPort
    if spec.kind == "unix":
        # Not reactor.adoptStreamPort: its UNIX port would shutdown() the
        # socket every worker shares when this one stops.
        port = adoptUNIXPort(AdoptedUNIXPort, descriptors, fd, cast(IProtocolFactory, serving))
    else:
        # What reactor.adoptStreamPort does, with the worker's own TCP port.
        port = adoptTCPPort(ServingTCPPort, descriptors, fd, spec.family, cast(IProtocolFactory, serving))
        if balance is not None:
            port.balanceWith(balance)
    port.startListening()
    return port
