# -*- test-case-name: tests.test_cluster_api -*-
"""
A worker's listens and the real reactor: which of its methods a worker
routes through the master, the reactor whose listens stay in the worker
(Node's C{exclusive}), which listens of a command-line worker go through the
master, and the master's refusals as the errors a listen in one process
gives.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IReactorSocket
from twisted.python.failure import Failure
from zope.interface import directlyProvides, providedBy

from .._common.endpoints import ListenSpec, isDatagram, parseDatagram, specFromDescription


def listenError(spec: ListenSpec, reason: Failure) -> Failure:
    """
    The master's refusal of a listen, as the error a listen in one process
    gives: L{CannotListenError}, whose C{socketError} has the master's errno
    (C{EADDRINUSE}, C{EACCES}, ...) when a bind failed.
    """
    if reason.check(CannotListenError):
        return reason
    text = reason.getErrorMessage()
    found = re.search(r"\[Errno (\d+)\] ([^.]*)", text)
    error: object = OSError(int(found.group(1)), found.group(2)) if found else reason.value
    address = spec.address or "any"
    return Failure(CannotListenError(address, spec.port if spec.port >= 0 else address, error))


#: The reactor methods a worker routes through the master.
ROUTED_LISTENS = ("listenTCP", "listenSSL", "listenUNIX", "listenUDP")


class DirectReactor:
    """
    The real reactor with its own, unrouted listen methods: a listen of one
    worker alone (Node's C{exclusive: true}).
    """

    def __init__(self, reactor: IReactorSocket) -> None:
        self._reactor = reactor
        directlyProvides(self, *providedBy(reactor))

    def __getattr__(self, name: str) -> Any:
        if name in ROUTED_LISTENS:
            return getattr(type(self._reactor), name).__get__(self._reactor)
        return getattr(self._reactor, name)


def _address(spec: ListenSpec) -> str:
    # Node's key less the index: the listens that count up one index.
    return spec.key(0).rsplit(":", 1)[0]


class CommandLineListens:
    """
    Which listens of a C{twist cluster} worker go through the master: those
    the master was configured for, the n-th listen on a configured address
    for its n-th configuration of it (a FACTORY's C{--listen}s, or the
    endpoints in a clustered plugin's options).  The others are made in the
    worker itself, as Node's C{exclusive: true} does, with their real port
    and Twisted's own errors: passive FTP's C{listenTCP(0)} at run time is
    the FTP worker's own, not a port every worker shares.

    For a plugin whose options name no endpoint the master recognises
    (C{configured} is L{None}), the listens made while its service starts
    (L{starting}) are its own, and go through the master.

    @ivar starting: The plugin's service is starting.
    """

    def __init__(self, configured: Sequence[ListenSpec] | None) -> None:
        self._configured = None if configured is None else Counter(map(_address, configured))
        self.starting = False

    def throughMaster(self, spec: ListenSpec, index: int) -> bool:
        """
        Does the C{index}-th listen on C{spec}'s address go through the
        master?
        """
        if self._configured is None:
            return self.starting
        return index < self._configured[_address(spec)]


def specsOf(descriptions: Sequence[str]) -> list[ListenSpec]:
    """
    What each endpoint description (a stream endpoint or C{udp:}) listens on.
    """
    return [
        parseDatagram(description)[0] if isDatagram(description) else specFromDescription(description)
        for description in descriptions
    ]
