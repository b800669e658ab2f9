# -*- test-case-name: tests.test_transport -*-
"""
The TCP transport of a worker's connections: Twisted's own, except that a
connection its protocol closes while handling a read is finished as soon as
the read is handled.

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


class PromptCloseServer(tcp.Server):
    """
    A TCP server connection that, closed by its protocol during a read, sends
    what was written and closes at the end of that read.
    """

    _handlingRead = False
    _wroteDuringRead = False

    def startWriting(self) -> None:
        if self._handlingRead:
            # Decided when the read is handled: send now, or wait as usual.
            self._wroteDuringRead = True
        else:
            super().startWriting()

    def doRead(self) -> Any:
        self._handlingRead = True
        try:
            why = super().doRead()
        finally:
            self._handlingRead = False
        if self._wroteDuringRead:
            self._wroteDuringRead = False
            if self._aborting:
                # abortConnection() discards what was written.
                pass
            elif why is None and self.disconnecting:
                self._finish()
            else:
                super().startWriting()
        return why

    def _finish(self) -> None:
        """
        Send what was written and, once all of it is sent, close: what the
        reactor would do on the next turn.
        """
        why = self.doWrite()
        if why:
            self.reactor.removeReader(self)
            self.reactor.removeWriter(self)
            self.connectionLost(_ENDINGS.get(type(why)) or Failure(why))
        elif self.dataBuffer or self._tempDataLen:
            # The rest waits for writability.
            super().startWriting()


def serveConnection(reactor: Any, fd: int, family: int, factory: IProtocolFactory) -> Any:
    """
    Serve a connected stream socket with C{factory}, as
    C{reactor.adoptStreamConnection} does, over a L{PromptCloseServer} for
    TCP.  The caller keeps C{fd} (the transport has a duplicate).

    @return: The transport, or L{None} if the factory refused the
        connection.
    """
    if family == socket.AF_UNIX:
        return reactor.adoptStreamConnection(fd, family, factory)
    return PromptCloseServer._fromConnectedSocket(fd, family, factory, reactor)
