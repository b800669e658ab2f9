# -*- test-case-name: tests.test_transport -*-
"""
The TCP transport of a worker's connections: Twisted's own, except that it
serves what a new connection's peer has already sent at once, and that a
connection its protocol closes while handling a read is finished as soon as
the read is handled.

Twisted's transport registers a new connection with the reactor for
reading and leaves the first read to a later turn, once C{epoll} reports
it.  An HTTP client sends its request as soon as it is connected, so by the
time a worker accepts the connection (or receives it from the master) the
request is often there already.  L{PromptCloseServer.opened} reads at
once; only a connection with more to come is registered.  A connection
that is answered and closed in that read never touches the reactor: no
C{epoll_ctl} to watch it and none to stop, and no turn of the reactor.  If
nothing has arrived yet, the read costs one C{recv()} that finds nothing.

Twisted's C{loseConnection()} registers the socket for writability and
leaves the rest to the reactor's next turn: once the kernel reports the
socket writable, which for a fresh connection is at once, C{doWrite} sends
what was written and closes.  For a connection that ends with its response
(HTTP's C{Connection: close}, most one-shot protocols) that costs one more
turn of the reactor and two C{epoll_ctl} calls (to watch for writability,
and to stop).  L{PromptCloseServer} sends and closes at the end of the read
instead, with the same C{send()} Twisted would have made.

Everything else takes Twisted's course: what does not fit in the socket's
buffer waits for writability, as does whatever is written on a connection
that stays open (sending keep-alive responses eagerly gained some
throughput on a saturated machine but doubled its tail latency).

What a protocol can notice: its first C{dataReceived} may come in the same
turn of the reactor as its C{connectionMade}, before anything it scheduled
there with C{callLater(0, ...)}; with Twisted's transport it never does.
"""

from __future__ import annotations

import fcntl
import os
import socket
import sys
from typing import Any

from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IProtocolFactory, IReactorFDSet, ITransport
from twisted.logger import Logger
from twisted.python.failure import Failure

from .twistedinternals import (
    TCPServer,
    UNIXServer,
    adoptTCPConnection,
    adoptUNIXConnection,
    hasUnsentData,
    isAborting,
)

#: Twisted's reactor reports these endings with one shared failure each.
_ENDINGS = {
    ConnectionDone: Failure(ConnectionDone()),
    ConnectionLost: Failure(ConnectionLost()),
}


class PromptCloseServer(TCPServer):
    """
    A TCP server connection that reads what has arrived as soon as it is
    opened and that, closed by its protocol during a read, sends what was
    written and closes at the end of that read.

    Whoever makes one calls L{opened} once its protocol is connected
    (L{serveConnection} and the worker's port do); until then it is not
    registered with the reactor, for reading or writing: what the protocol
    asks for is noted, and registered at the end of L{opened}.

    A protocol that takes the socket over while it is being connected
    (asks for its descriptor or its handle) ends the opening there: the
    connection is registered as Twisted's transport has it registered by
    then, and is not read early.  Nor is one whose descriptor the protocol
    made blocking.  (inetd's protocol makes the socket blocking, removes it
    from the reactor and hands it to a child process, which must get the
    client's first bytes.)
    """

    _log = Logger()
    _handlingRead = False
    _wroteDuringRead = False
    #: Until the end of L{opened}, reading and writing are only noted
    #: (C{_wantsToRead}, C{_wantsToWrite}), not registered with the reactor.
    _opening = True
    _wantsToRead = False
    _wantsToWrite = False

    def __init__(self, *arguments: Any) -> None:
        super().__init__(*arguments)
        # The reactor asks for the descriptor only to register it, which
        # waits for the end of opening: until then, whoever asks is the
        # protocol, taking the socket over.
        self.fileno = self._descriptorTaken

    def startReading(self) -> None:
        if self._opening:
            self._wantsToRead = True
        else:
            super().startReading()

    def stopReading(self) -> None:
        if self._opening:
            self._wantsToRead = False
        else:
            super().stopReading()

    def opened(self) -> None:
        """
        Serve what the peer has already sent, as the reactor would on its
        next turn; then register for reading if the protocol still reads.
        """
        if not self._opening:
            return
        if self._wantsToRead and self.connected and _nonBlocking(self.socket):
            self._readFirst()
        self._endOpening()

    def _descriptorTaken(self) -> int:
        self._endOpening()
        return self.socket.fileno()

    def getHandle(self) -> Any:
        self._endOpening()
        return super().getHandle()

    def _endOpening(self) -> None:
        """
        From now on, Twisted's own course: registered for what the protocol
        wants, as Twisted's transport would have it registered by now.
        """
        if not self._opening:
            return
        self._opening = False
        if self.connected:
            self.fileno = self.socket.fileno
            if self._wantsToRead:
                super().startReading()
            if self._wantsToWrite:
                super().startWriting()

    def _readFirst(self) -> None:
        # What the reactor does with a read, errors included (logged, and
        # they cost this connection only).
        try:
            why = self.doRead()
        except BaseException:
            self._log.failure("Unhandled error in a connection's first read")
            why = sys.exc_info()[1]
        if why:
            try:
                self._lost(why, reading=True)
            except Exception:
                self._log.failure("Unhandled error while ending a connection")

    def startWriting(self) -> None:
        if self._handlingRead:
            # Decided when the read is handled: send now, or wait as usual.
            self._wroteDuringRead = True
        elif self._opening:
            self._wantsToWrite = True
        else:
            super().startWriting()

    def stopWriting(self) -> None:
        if self._opening:
            self._wantsToWrite = False
        else:
            super().stopWriting()

    def doRead(self) -> Any:
        self._handlingRead = True
        try:
            why = super().doRead()
        finally:
            self._handlingRead = False
        if self._wroteDuringRead:
            self._wroteDuringRead = False
            if isAborting(self):
                # abortConnection() discards what was written.
                pass
            elif why is None and self.disconnecting:
                self._finish()
            else:
                self._waitToWrite()
        return why

    def _waitToWrite(self) -> None:
        if self._opening:
            self._wantsToWrite = True
        else:
            super().startWriting()

    def _finish(self) -> None:
        """
        Send what was written and, once all of it is sent, close: what the
        reactor would do on the next turn.
        """
        why = self.doWrite()
        if why:
            self._lost(why, reading=False)
        elif hasUnsentData(self):
            # The rest waits for writability.
            self._waitToWrite()

    def _lost(self, why: Any, reading: bool) -> None:
        """
        End the connection because C{doRead} (C{reading}) or C{doWrite}
        returned or raised C{why}, as the reactor does: the end of a stream
        that was read ends only the reading half of a half-closeable
        protocol.
        """
        self.stopReading()
        ending = _ENDINGS.get(type(why))
        if reading and type(why) is ConnectionDone:
            self.readConnectionLost(ending)  # type: ignore[arg-type]
        else:
            self.stopWriting()
            self.connectionLost(ending or Failure(why))


def _nonBlocking(skt: socket.socket) -> bool:
    # The descriptor's own flag (a socket object made from a descriptor
    # says "blocking" whatever it is): the protocol may have changed it.
    return bool(fcntl.fcntl(skt.fileno(), fcntl.F_GETFL) & os.O_NONBLOCK)


def serveConnection(
    reactor: IReactorFDSet, fd: int, family: int, factory: IProtocolFactory
) -> ITransport | None:
    """
    Serve a connected stream socket with C{factory}, as
    C{reactor.adoptStreamConnection} does, over a L{PromptCloseServer} for
    TCP.  The caller keeps C{fd} (the transport has a duplicate).

    @return: The transport, or L{None} if the factory refused the
        connection.
    """
    # What reactor.adoptStreamConnection does, whose answer (the transport,
    # or None when the factory refused) is not part of its interface.
    if family == socket.AF_UNIX:
        return adoptUNIXConnection(UNIXServer, reactor, fd, factory)
    transport = adoptTCPConnection(PromptCloseServer, reactor, fd, family, factory)
    if transport is not None:
        transport.opened()
    return transport
