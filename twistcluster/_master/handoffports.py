# -*- test-case-name: tests.test_handoff, tests.test_handoffhandle -*-
"""
The master's listening ports for the hand-off (C{rr}, C{least-conn}): the
shared L{AcceptLoop<twistcluster._common.acceptloop.AcceptLoop>} on
Twisted's TCP and UNIX ports, passing each connection on as a bare file
descriptor, never building a transport or a protocol for a socket the
master only hands off (L{twistcluster._master.handoff.HandOffHandle} takes
them).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.fdesc import setNonBlocking
from twisted.internet.protocol import Factory
from twisted.python.reflect import qual

from .._common.acceptloop import AcceptLoop
from .._common.endpoints import ListenSpec
from .._common.ports import AdoptedUNIXPort
from .._common.reactors import IAcceptingReactor
from .._common.sockets import bindablePath, removeStaleSocketFile
from .._common.twistedinternals import QuietPort, TCPPort, UNIXPort, adoptTCPPort, adoptUNIXPort


class _SilentFactory(Factory):
    """
    The factory of a socket the master listens on for its workers: the
    accept loop hands sockets off, so it builds no protocol.  Its prefix is
    what Twisted's C{starting on} line names (not this class).
    """

    noisy = False

    def logPrefix(self) -> str:
        return "twistcluster master"


class _HandOffLoop(AcceptLoop):
    """
    The accept loop of a master's port: each connection goes to the
    callable L{handOffTo} names.
    """

    def handOffTo(
        self, connectionAccepted: Callable[[int, Any], object], acceptedSome: Callable[[], object] | None
    ) -> None:
        """
        Give each accepted connection's descriptor (which it then owns) and
        peer address to C{connectionAccepted}, and call C{acceptedSome} after
        each pass of the loop that accepted any (before listening).
        """
        self._connectionAccepted = connectionAccepted
        self._acceptedSome = acceptedSome

    def logPrefix(self) -> str:
        # The reactor asks for it at every read; Twisted's port would make
        # its factory's qualified name each time.
        return _HAND_OFF_PREFIX


_HAND_OFF_PREFIX = qual(_SilentFactory)


class HandOffTCPPort(QuietPort, _HandOffLoop, TCPPort):
    reactor: IAcceptingReactor


class HandOffUNIXPort(QuietPort, _HandOffLoop, UNIXPort):
    reactor: IAcceptingReactor


class AdoptedHandOffUNIXPort(QuietPort, _HandOffLoop, AdoptedUNIXPort):
    reactor: IAcceptingReactor


#: A port of the master's, which hands off what it accepts.
HandOffPort = HandOffTCPPort | HandOffUNIXPort | AdoptedHandOffUNIXPort


def listenForHandOff(
    reactor: IAcceptingReactor,
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
    port.handOffTo(connectionAccepted, acceptedSome)
    port.startListening()
    return port
