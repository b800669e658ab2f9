# -*- test-case-name: tests.test_endpoints -*-
"""
What a listen asks for, as a plain value (L{ListenSpec}), whichever way it
was asked: an endpoint description on the master's command line, or a
C{listenTCP}/C{listenUNIX}/C{listenSSL} call in a worker.

Both sides derive specs through Twisted's own endpoint parsers, so every
endpoint string Twisted knows, and wrappers such as C{haproxy:}, mean the same
thing here as they do in a single process.
"""

from __future__ import annotations

import os
import socket
from typing import Any

from attrs import asdict, frozen
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IProtocolFactory
from twisted.internet.protocol import Factory, Protocol


@frozen
class ListenSpec:
    """
    One listening socket, as a worker asks the master for it.

    @ivar kind: C{"tcp"} or C{"unix"}.
    @ivar address: The interface (tcp) or the absolute socket path (unix).
    @ivar port: The TCP port (0: the kernel picks), or -1 for unix.
    @ivar backlog: The listen backlog; the first asker's wins.
    @ivar mode: The socket file's mode (unix only).
    """

    kind: str
    address: str
    port: int = -1
    backlog: int = 50
    mode: int = 0o666

    @classmethod
    def forTCP(cls, port: int, backlog: int = 50, interface: str = "") -> ListenSpec:
        return cls("tcp", interface, int(port), int(backlog))

    @classmethod
    def forUNIX(cls, address: str | bytes, backlog: int = 50, mode: int = 0o666) -> ListenSpec:
        path = os.fsdecode(address)
        return cls("unix", os.path.abspath(path), -1, int(backlog), int(mode))

    @property
    def family(self) -> int:
        if self.kind == "unix":
            return socket.AF_UNIX
        return socket.AF_INET6 if ":" in self.address else socket.AF_INET

    @property
    def addressType(self) -> int:
        """
        Node's C{addressType}: 4, 6, or -1 for a UNIX socket.
        """
        return {socket.AF_INET: 4, socket.AF_INET6: 6}.get(self.family, -1)

    def key(self, index: int) -> str:
        """
        The handle key, as Node spells it: C{address:port:addressType:fd:index}.
        The n-th listen on the same address in every worker shares one key,
        and so one socket (and one kernel-chosen port for port 0).
        """
        return f"{self.address}:{self.port}:{self.addressType}:-1:{index}"

    def grantedBy(self, configured: ListenSpec) -> bool:
        """
        Does a master configured with C{configured} grant this spec?
        (Backlog and mode are the first asker's choice, not part of identity.)
        """
        return (self.kind, self.address, self.port) == (
            configured.kind,
            configured.address,
            configured.port,
        )

    def toJSON(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def fromJSON(cls, value: dict[str, Any]) -> ListenSpec:
        return cls(**value)


class UnsupportedEndpoint(ValueError):
    """
    An endpoint string that does not listen on a TCP or UNIX stream socket.
    """


class _ListenRecorder:
    """
    A stand-in reactor that records the listen an endpoint makes, instead of
    making it.
    """

    def __init__(self) -> None:
        self.specs: list[ListenSpec] = []

    def listenTCP(self, port: int, factory: IProtocolFactory, backlog: int = 50, interface: str = "") -> object:
        self.specs.append(ListenSpec.forTCP(port, backlog, interface))
        return object()

    def listenSSL(self, port: int, factory: IProtocolFactory, contextFactory: object, backlog: int = 50, interface: str = "") -> object:
        return self.listenTCP(port, factory, backlog, interface)

    def listenUNIX(self, address: str, factory: IProtocolFactory, backlog: int = 50, mode: int = 0o666, wantPID: int = 0) -> object:
        self.specs.append(ListenSpec.forUNIX(address, backlog, mode))
        return object()

    def __getattr__(self, name: str) -> Any:
        raise UnsupportedEndpoint(f"it needs reactor.{name}, which twistcluster does not route yet")


def specFromDescription(description: str) -> ListenSpec:
    """
    Parse a server endpoint description into the listen it makes.

    @raise ValueError: The description is malformed, or it does not listen on
        exactly one stream socket.  The message says why.
    """
    recorder = _ListenRecorder()
    try:
        endpoint = serverFromString(recorder, description)
        failures: list[Any] = []
        endpoint.listen(Factory.forProtocol(Protocol)).addErrback(failures.append)
        if failures:
            failures[0].raiseException()
    except UnsupportedEndpoint:
        raise
    except Exception as e:
        raise ValueError(str(e) or type(e).__name__) from e
    if len(recorder.specs) != 1:
        raise UnsupportedEndpoint("it does not listen on exactly one stream socket")
    return recorder.specs[0]
