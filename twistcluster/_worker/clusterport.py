# -*- test-case-name: tests.test_gone_connection, tests.test_cluster_api, tests.test_node_listen -*-
"""
A worker's listen through the master: a L{ClusterPort} asks the master for
the socket (C{QueryServer}, at the listen's Node index), then either serves
the connections the master hands it (C{NewConn}) or adopts the listening
socket the master answered with and accepts on it (or reads its datagrams)
on its own.  What it needs of the worker's control channel is a
L{MasterChannel}.
"""

from __future__ import annotations

import errno
import os
import socket
from typing import Any, Literal, Protocol

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IListeningPort, ILoggingContext, IProtocolFactory
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from .._common.balance import AcceptBalance
from .._common.endpoints import ListenSpec
from .._common.events import Latch
from .._common.ports import adoptListeningSocket
from .._common.protocol import ListenRefused
from .._common.reactors import IWorkerReactor
from .._common.sockets import describeAddress
from .._common.transport import serveConnection
from .routing import listenError


class MasterChannel(Protocol):
    """
    What a cluster port needs of the worker's control channel.
    """

    def queryServer(self, spec: ListenSpec, index: int) -> Deferred[dict[str, Any]]: ...

    def portListening(self, port: ClusterPort) -> None: ...

    def portClosed(self, port: ClusterPort) -> None: ...

    def connectionOpened(self, port: ClusterPort, protocol: Any) -> None:
        """
        C{port} made a connection, served by C{protocol}; the channel sees it
        end by wrapping its C{connectionLost}.
        """

    def connectionGone(self, port: ClusterPort) -> None:
        """
        C{port} was handed a connection that had already ended (its client
        reset it, say): nothing was served.
        """

    def portRefused(self, port: ClusterPort, reason: Failure) -> None:
        """
        The master refused C{port}'s listen (C{reason} is a
        L{CannotListenError}).
        """


class ListenIndexes:
    """
    Node's listen index: the n-th listen on one address in a worker gets index
    n, so the n-th listen of every worker shares a socket (and a port-0 port).
    The count restarts once every listen on that address has closed.
    """

    def __init__(self) -> None:
        self._open: dict[str, set[int]] = {}
        self._next: dict[str, int] = {}

    def peek(self, spec: ListenSpec) -> int:
        """
        The index the next listen on C{spec}'s address would take.
        """
        return self._next.get(spec.key(0).rsplit(":", 1)[0], 0)

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


class _TrackedFactory(Factory):
    """
    The user's factory as a worker's port uses it: each connection it builds
    is reported to the control channel, which counts it open until it is
    lost.  Only C{buildProtocol} is wrapped, so nothing stands between the
    connection and the user's protocol for each read.
    """

    noisy = False

    def __init__(self, wrapped: IProtocolFactory, port: ClusterPort, channel: MasterChannel) -> None:
        self._wrapped = wrapped
        self._port = port
        self._channel = channel

    def buildProtocol(self, addr: Any) -> Any:
        protocol = self._wrapped.buildProtocol(addr)
        if protocol is not None:
            self._channel.connectionOpened(self._port, protocol)
        return protocol

    def logPrefix(self) -> str:
        # What the port's log lines name: the user's factory, not this one.
        if ILoggingContext.providedBy(self._wrapped):
            prefix: str = self._wrapped.logPrefix()
            return prefix
        return type(self._wrapped).__name__


@implementer(IListeningPort)
class ClusterPort:
    """
    A listening port in a worker whose socket the master owns.

    @ivar key: The master's handle key, once the master has answered.
    @ivar sockname: The bound address, once the master has answered.
    @ivar reportClosed: Whether the master wants to hear when the
        connections it handed over end (C{least-conn}).
    @ivar factory: The user's protocol factory, or for a UDP port its
        datagram protocol.
    """

    _log = Logger()

    def __init__(
        self,
        reactor: IWorkerReactor,
        channel: MasterChannel,
        indexes: ListenIndexes,
        spec: ListenSpec,
        factory: Any,
        maxPacketSize: int = 8192,
    ) -> None:
        self._reactor = reactor
        self._channel = channel
        self._indexes = indexes
        self.spec = spec
        self.factory = factory
        self._maxPacketSize = maxPacketSize
        self._serving: Any = factory if spec.kind == "udp" else _TrackedFactory(factory, self, channel)
        self.key: str | None = None
        self.sockname: dict[str, Any] | None = None
        self.reportClosed = False
        self._adopted: IListeningPort | None = None
        self._index: int | None = None
        self._closed = False
        self._listening: Latch[ClusterPort] = Latch()

    def startListening(self) -> None:
        # A datagram protocol starts when its port connects it.
        if self.spec.kind != "udp":
            self.factory.doStart()
        self._index = self._indexes.take(self.spec)
        self._channel.queryServer(self.spec, self._index).addCallbacks(self._granted, self._refused)

    def whenListening(self) -> Deferred[ClusterPort]:
        """
        Fires with this port once the master has granted the listen, or fails
        with the master's reason.
        """
        return self._listening.wait()

    def _granted(self, answer: dict[str, Any]) -> None:
        sent: list[int | None] = answer.get("fds") or []
        fds = [fd for fd in sent if fd is not None]
        if self._closed or len(fds) < len(sent):
            for received in fds:
                os.close(received)
            if not self._closed:
                # The kernel dropped it on the way: out of descriptors.
                reason = ListenRefused("the listening socket did not arrive (out of descriptors)")
                self._refused(Failure(reason))
            return
        if fds:
            fd, *rest = fds
            balanceFD = rest[0] if rest else None
            try:
                balance = None
                if balanceFD is not None:
                    balance = AcceptBalance(balanceFD, answer["balanceSlot"])
                self._adopted = adoptListeningSocket(
                    self._reactor,
                    fd,
                    self.spec,
                    self._serving,
                    self._maxPacketSize,
                    balance,
                    answer.get("listenBacklog"),
                )
            except Exception:
                self._refused(Failure())
                return
            finally:
                for received in fds:
                    os.close(received)
        self.key = answer["key"]
        self.sockname = answer["sockname"]
        self.reportClosed = bool(answer.get("reportClosed"))
        self._channel.portListening(self)
        self._settle(self)

    def _refused(self, reason: Failure) -> None:
        self._closed = True
        self._release()
        if self.spec.kind != "udp":
            self.factory.doStop()
        reason = listenError(self.spec, reason)
        self._channel.portRefused(self, reason)
        self._settle(reason)

    def _settle(self, outcome: Failure | ClusterPort) -> None:
        if isinstance(outcome, Failure):
            error = outcome.value
            assert error is not None
            self._listening.fail(lambda: error)
        else:
            self._listening.fire(outcome)

    def address(self) -> str:
        """
        The address the master bound for this listen, as its log line says it
        (C{tcp:127.0.0.1:8080}, C{unix:PATH}), or C{?} before it answered.
        """
        return "?" if self.sockname is None else describeAddress(self.spec, self.sockname)

    def connectionReceived(self, fd: int) -> bool:
        """
        Serve a connection the master handed over.  The caller closes C{fd}
        (the transport works on a duplicate).

        @return: Whether the factory took it (or it had already ended).
        """
        if self._closed:
            return False
        try:
            transport = serveConnection(self._reactor, fd, self.spec.family, self._serving)
        except OSError as e:
            if e.errno != errno.ENOTCONN:
                raise
            # Already over: reset while it waited, or served to its end by a
            # worker that died before its ack.  Nothing to serve, and no
            # other worker could: taken, so it goes nowhere else; counted.
            self._log.debug("a connection handed over on {key} had already ended", key=self.key)
            self._channel.connectionGone(self)
            return True
        return transport is not None

    @property
    def closed(self) -> bool:
        return self._closed

    def stopListening(self) -> Deferred[None]:
        stopped: Deferred[None] | None = None
        if not self._closed:
            self._closed = True
            if self._adopted is not None:
                # A close, never a shutdown(): other workers share the socket.
                stopped = self._adopted.stopListening()
            if self.key is not None:
                self._channel.portClosed(self)
            self._release()
            if self.spec.kind != "udp":
                self.factory.doStop()
        return stopped or succeed(None)

    loseConnection = stopListening

    def _release(self) -> None:
        if self._index is not None:
            self._indexes.release(self.spec, self._index)
            self._index = None

    def getHost(self) -> IPv4Address | IPv6Address | UNIXAddress:
        if self.spec.kind == "unix":
            return UNIXAddress(self.spec.address)
        address = self.sockname or {"address": self.spec.address, "port": self.spec.port}
        kind: Literal["UDP", "TCP"] = "UDP" if self.spec.kind == "udp" else "TCP"
        if self.spec.family == socket.AF_INET6:
            return IPv6Address(kind, address["address"], address["port"])
        return IPv4Address(kind, address["address"], address["port"])
