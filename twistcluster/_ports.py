# -*- test-case-name: tests.test_handles -*-
"""
The master's listening ports: they accept connections and pass each one on
as a bare file descriptor, never building a transport or a protocol for a
socket the master only hands off.

Also L{AdoptedUNIXPort}, for a UNIX listening socket made elsewhere (by the
master for a worker, or by systemd for the master).
"""

from __future__ import annotations

import errno
from typing import Any, Callable

from twisted.internet import tcp, unix
from twisted.internet.fdesc import setNonBlocking
from twisted.internet.interfaces import IListeningPort, IReactorTime
from twisted.internet.protocol import Factory
from twisted.logger import Logger

from ._endpoints import ListenSpec
from ._sockets import bindablePath, removeStaleSocketFile

#: accept() errors that mean "out of resources": stop reading, retry later.
_RESOURCE_ERRORS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
#: accept() errors about one connection only (it died in the backlog).
_TRANSIENT_ERRORS = frozenset({errno.ECONNABORTED, errno.EPERM, errno.EPROTO, errno.EINTR})


class _SilentFactory(Factory):
    noisy = False


class _HandOffAccepting:
    """
    The accept loop shared by the TCP and UNIX hand-off ports.

    @ivar _connectionAccepted: Called with each accepted socket's file
        descriptor, which it then owns.
    @ivar _resourceRetryDelay: Seconds to wait after EMFILE/ENFILE before
        accepting again: no busy loop, and no accept-and-close either.
    """

    _connectionAccepted: Callable[[int], object]
    _resourceRetryDelay = 0.1
    _acceptBatch = 256
    _paused = False
    _waitingForResources: Any = None
    _outOfResourcesSince: str | None = None
    reactor: IReactorTime
    socket: Any
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
        # socket._accept() gives the raw descriptor (accept4 with
        # SOCK_CLOEXEC), so no Python socket object is made per connection.
        accept = self.socket._accept
        connectionAccepted = self._connectionAccepted
        for _ in range(limit):
            try:
                fd, _address = accept()
            except BlockingIOError:
                return False
            except OSError as e:
                if e.errno in _TRANSIENT_ERRORS:
                    continue
                if e.errno in _RESOURCE_ERRORS:
                    self._outOfResources(e)
                    return False
                raise
            if self._outOfResourcesSince is not None:
                self._log.info(
                    "accepting again after {error}", error=self._outOfResourcesSince
                )
                self._outOfResourcesSince = None
            connectionAccepted(fd)
            if stopWhenPaused and self._paused:
                return False
        return True

    def pauseAccepting(self) -> None:
        """
        Leave new connections in the kernel backlog for now.
        """
        if not self._paused:
            self._paused = True
            self.stopReading()  # type: ignore[attr-defined]

    def resumeAccepting(self) -> None:
        if self._paused:
            self._paused = False
            if self._waitingForResources is None and self.connected:  # type: ignore[attr-defined]
                self.startReading()  # type: ignore[attr-defined]

    def _outOfResources(self, error: OSError) -> None:
        if self._outOfResourcesSince is None:
            # Once per episode: it may last, and we retry ten times a second.
            self._outOfResourcesSince = errno.errorcode.get(error.errno or 0, str(error))
            self._log.warn(
                "accept() failed: {error}; retrying every {delay}s until descriptors are free",
                error=self._outOfResourcesSince,
                delay=self._resourceRetryDelay,
            )
        self.stopReading()  # type: ignore[attr-defined]
        self._waitingForResources = self.reactor.callLater(
            self._resourceRetryDelay, self._resourcesMayBeBack
        )

    def _resourcesMayBeBack(self) -> None:
        self._waitingForResources = None
        if not self._paused and self.connected:  # type: ignore[attr-defined]
            self.startReading()  # type: ignore[attr-defined]

    def connectionLost(self, reason: Any) -> None:
        if self._waitingForResources is not None:
            self._waitingForResources.cancel()
            self._waitingForResources = None
        super().connectionLost(reason)  # type: ignore[misc]


class AdoptedUNIXPort(unix.Port):
    """
    A UNIX port on a listening socket that someone else made and others
    share.  Twisted's own adopted UNIX port would C{chmod} the file and
    C{listen()} again with its own mode and backlog, C{shutdown()} the socket
    when it stops (ending it for every process that shares it) and remove
    the file; this one does none of that.
    """

    _shouldShutdown = False

    def startListening(self) -> None:
        assert self._preexistingSocket is not None, "only for adopted sockets"
        tcp._reservedFD.reserve()
        skt, self._preexistingSocket = self._preexistingSocket, None
        self.factory.doStart()
        self.connected = True
        self.socket = skt
        self.fileno = skt.fileno
        self.numberAccepts = 100
        self.startReading()

    def connectionLost(self, reason: Any) -> None:
        # tcp.Port's, not unix.Port's: the file belongs to whoever bound it.
        tcp.Port.connectionLost(self, reason)


class HandOffTCPPort(_HandOffAccepting, tcp.Port):
    def _logConnectionLostMsg(self) -> None:
        pass


class HandOffUNIXPort(_HandOffAccepting, unix.Port):
    def _logConnectionLostMsg(self) -> None:
        pass


class AdoptedHandOffUNIXPort(_HandOffAccepting, AdoptedUNIXPort):
    def _logConnectionLostMsg(self) -> None:
        pass


def listenForHandOff(
    reactor: Any, spec: ListenSpec, connectionAccepted: Callable[[int], object]
) -> IListeningPort:
    """
    Bind and listen as C{spec} says (or adopt the inherited socket it names);
    each accepted connection's descriptor goes to C{connectionAccepted}.

    @raise twisted.internet.error.CannotListenError: The bind failed.
    """
    port: _HandOffAccepting
    if spec.fd >= 0:
        setNonBlocking(spec.fd)
    if spec.fd >= 0 and spec.kind == "unix":
        port = AdoptedHandOffUNIXPort._fromListeningDescriptor(reactor, spec.fd, _SilentFactory())
    elif spec.fd >= 0:
        port = HandOffTCPPort._fromListeningDescriptor(reactor, spec.fd, spec.family, _SilentFactory())
    elif spec.kind == "unix":
        path = bindablePath(spec.address)
        removeStaleSocketFile(path)
        port = HandOffUNIXPort(path.encode(), _SilentFactory(), spec.backlog, spec.mode, reactor)
    else:
        port = HandOffTCPPort(spec.port, _SilentFactory(), spec.backlog, spec.address, reactor)
    port._connectionAccepted = connectionAccepted
    port.startListening()  # type: ignore[attr-defined]
    return port  # type: ignore[return-value]
