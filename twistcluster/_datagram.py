# -*- test-case-name: tests.test_datagram -*-
"""
C{listenUDP} in a worker: like Node, a datagram socket is always shared, not
round-robin.  The worker asks the master for the socket (C{QueryServer}); the
master binds it once per key and sends the bound socket itself in the answer
(C{fd}); every worker adopts it and the kernel gives each datagram to one of
them.
"""

from __future__ import annotations

import os
import socket
from typing import Any

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, succeed
from twisted.internet.fdesc import setNonBlocking
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ._endpoints import ListenSpec
from ._events import Latch
from ._listening import MasterChannel, _Indexes, listenError
from ._protocol import ListenRefused


@implementer(IListeningPort)
class ClusterDatagramPort:
    """
    A datagram port in a worker whose socket the master bound.  The
    protocol's transport is the adopted port itself, once the master has
    answered.

    @ivar key: The master's handle key, once the master has answered.
    @ivar sockname: The bound address, once the master has answered.
    """

    _log = Logger()
    _close = staticmethod(os.close)

    def __init__(
        self,
        reactor: Any,
        channel: MasterChannel,
        indexes: _Indexes,
        spec: ListenSpec,
        protocol: Any,
        maxPacketSize: int = 8192,
    ) -> None:
        self._reactor = reactor
        self._channel = channel
        self._indexes = indexes
        self.spec = spec
        self.protocol = protocol
        self._maxPacketSize = maxPacketSize
        self.key: str | None = None
        self.sockname: dict[str, Any] | None = None
        self._index: int | None = None
        self._port: Any = None
        self.closed = False
        self._outcome: Latch[ClusterDatagramPort] = Latch()

    def startListening(self) -> None:
        self._index = self._indexes.take(self.spec)
        self._channel.queryServer(self.spec, self._index).addCallbacks(
            self._granted, self._refused
        )

    def whenListening(self) -> Deferred[ClusterDatagramPort]:
        """
        Fires with this port once it is adopted, or fails with the reason.
        """
        return self._outcome.wait()

    def _granted(self, answer: dict[str, Any]) -> None:
        fd = answer.get("fd")
        if fd is None:
            self._refused(Failure(ListenRefused("the master sent no datagram socket")))
            return
        try:
            if self.closed:
                return
            # Twisted's datagram port reads until EWOULDBLOCK: a blocking
            # socket would hang the worker after its first datagram.
            setNonBlocking(fd)
            self._port = self._reactor.adoptDatagramPort(
                fd, self.spec.family, self.protocol, self._maxPacketSize
            )
        except Exception:
            self._refused(Failure())
            return
        finally:
            self._close(fd)
        self.key = answer["key"]
        self.sockname = answer["sockname"]
        self._channel.portListening(self)  # type: ignore[arg-type]
        self._outcome.fire(self)

    def _refused(self, reason: Failure) -> None:
        self.closed = True
        self._release()
        reason = listenError(self.spec, reason)
        self._channel.portRefused(self, reason)
        self._outcome.fail(lambda: reason.value)

    def stopListening(self) -> Deferred[None]:
        if self.closed:
            return succeed(None)
        self.closed = True
        if self.key is not None:
            self._channel.portClosed(self)  # type: ignore[arg-type]
        self._release()
        if self._port is not None:
            return self._port.stopListening() or succeed(None)  # type: ignore[no-any-return]
        return succeed(None)

    loseConnection = stopListening

    def _release(self) -> None:
        if self._index is not None:
            self._indexes.release(self.spec, self._index)
            self._index = None

    def getHost(self) -> IPv4Address | IPv6Address:
        if self._port is not None:
            return self._port.getHost()  # type: ignore[no-any-return]
        cls = IPv6Address if self.spec.family == socket.AF_INET6 else IPv4Address
        return cls("UDP", self.spec.address, self.spec.port)
