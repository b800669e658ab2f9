# -*- test-case-name: tests.test_handoff, tests.test_transport, tests.test_balance -*-
"""
The accept loop of twistcluster's listening ports (L{AcceptLoop}): a whole
batch of C{accept()}s in one pass of the reactor, on the raw descriptor (no
Python socket object per connection), each connection's descriptor and
peer address to the port's C{_connectionAccepted}.  It pauses while the
connections it accepted wait for a worker (backpressure), and while
descriptors run out (EMFILE) it leaves connections in the kernel backlog
and tries again a moment later, rather than accepting and closing them.

The master's hand-off ports (L{twistcluster._master.handoffports}) and a
worker's L{ServingTCPPort<twistcluster._common.ports.ServingTCPPort>} mix
it into Twisted's ports.  Per connection it does plain integer work: the
counters are added up once per batch.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from .reactors import IAcceptingReactor
from .twistedinternals import rawAccept

#: accept() errors that mean "out of resources": stop reading, retry later.
_RESOURCE_ERRORS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
#: accept() errors about one connection only (it died in the backlog).
_TRANSIENT_ERRORS = frozenset({errno.ECONNABORTED, errno.EPERM, errno.EPROTO, errno.EINTR})


class AcceptLoop:
    """
    The accept loop of the master's hand-off ports and of a worker's
    L{ServingTCPPort<twistcluster._common.ports.ServingTCPPort>}, mixed into a
    Twisted port.

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
    # What the Twisted port this is mixed into provides.  Twisted types its
    # reactor by IReactorFDSet; the functions that make twistcluster's ports
    # are given an IAcceptingReactor, and each port class says so too (mypy
    # would find this mixin's declaration at odds with Twisted's otherwise).
    reactor: IAcceptingReactor
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
        self._waitingForResources = self.reactor.callLater(self._resourceRetryDelay, self._resourcesMayBeBack)

    def _resourcesMayBeBack(self) -> None:
        self._waitingForResources = None
        if not self._paused and self.connected:
            self.startReading()

    def connectionLost(self, reason: Failure) -> None:
        if self._waitingForResources is not None:
            self._waitingForResources.cancel()
            self._waitingForResources = None
        super().connectionLost(reason)  # type: ignore[misc]
