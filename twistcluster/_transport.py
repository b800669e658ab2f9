# -*- test-case-name: tests.test_transport -*-
"""
The TCP transport of a worker's connections: Twisted's own, except that what
a protocol writes while it handles a read is sent as soon as the read is
handled.

Twisted's transport sends on the reactor's next pass: C{write()} registers
the socket for writability, and the reactor calls C{doWrite} once the
kernel reports it writable, which for a fresh response is at once.  For a
request/response protocol that costs, per response, one more pass of the
reactor and two C{epoll_ctl} calls (to watch for writability and to stop).
L{PromptWriteServer} skips the detour: at the end of the read, everything
the protocol wrote during it goes out in one C{send()}, as one send would
have carried it on the next pass.  What does not fit in the socket buffer,
and whatever is written outside a read (from a timer, or from another
connection's read), waits for writability as in Twisted.
"""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet import tcp
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IProtocolFactory
from twisted.python.failure import Failure

#: Twisted's reactor reports these endings with one shared failure each.
_ENDINGS = {
    ConnectionDone: Failure(ConnectionDone()),
    ConnectionLost: Failure(ConnectionLost()),
}


class PromptWriteServer(tcp.Server):
    """
    A TCP server connection that sends what a read's handling wrote at the
    end of that read.
    """

    _handlingRead = False
    _wroteDuringRead = False

    def startWriting(self) -> None:
        if self._handlingRead:
            # Sent when the read is handled; no need to watch for writability.
            self._wroteDuringRead = True
        else:
            super().startWriting()

    def doRead(self) -> Any:
        self._handlingRead = True
        try:
            why = super().doRead()
        finally:
            self._handlingRead = False
        if not self._wroteDuringRead:
            return why
        self._wroteDuringRead = False
        if self._aborting:
            # abortConnection() discards what was written.
            return why
        if why is None:
            self._sendWritten()
        else:
            # The read ended the connection: what was written takes Twisted's
            # usual course (a half-closeable protocol may still send it).
            super().startWriting()
        return why

    def _sendWritten(self) -> None:
        why = self.doWrite()
        if why:
            # Ended by the write (or by loseConnection() once all was sent):
            # what the reactor does with a doWrite() that returns a reason.
            self.reactor.removeReader(self)
            self.reactor.removeWriter(self)
            ending = _ENDINGS.get(type(why))
            if ending is None:
                ending = Failure(why if isinstance(why, BaseException) else ConnectionLost())
            self.connectionLost(ending)
        elif self.dataBuffer or self._tempDataLen:
            super().startWriting()


def serveConnection(reactor: Any, fd: int, family: int, factory: IProtocolFactory) -> Any:
    """
    Serve a connected stream socket with C{factory}, as
    C{reactor.adoptStreamConnection} does, over a L{PromptWriteServer} for
    TCP.  The caller keeps C{fd} (the transport has a duplicate).

    @return: The transport, or L{None} if the factory refused the
        connection.
    """
    if family == socket.AF_UNIX:
        return reactor.adoptStreamConnection(fd, family, factory)
    return PromptWriteServer._fromConnectedSocket(fd, family, factory, reactor)

