# -*- test-case-name: tests.test_cluster_api -*-
"""
A worker's listens and the real reactor: which of its methods a worker
routes through the master, the reactor whose listens stay in the worker
(Node's C{exclusive}), and the master's refusals as the errors a listen in
one process gives.
"""

from __future__ import annotations

import re
from typing import Any

from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IReactorSocket
from twisted.python.failure import Failure
from zope.interface import directlyProvides, providedBy

from .._common.endpoints import ListenSpec


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
