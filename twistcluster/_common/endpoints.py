# -*- test-case-name: tests.test_endpoints -*-
"""
What a listen asks for, as a plain value (L{ListenSpec}), whichever way it
was asked: an endpoint description on the master's command line, or a
C{listenTCP}/C{listenUNIX}/C{listenSSL}/C{listenUDP} call in a worker.

Both sides derive stream specs through Twisted's own endpoint parsers, so
every endpoint string Twisted knows, and wrappers such as C{haproxy:}, mean
the same thing here as they do in a single process.  C{udp:} is not a
Twisted endpoint type (Twisted has no datagram endpoints): it is parsed here,
with the same escaping rules.
"""

from __future__ import annotations

import os
import socket
from typing import Any

from attrs import asdict, evolve, frozen
from twisted.internet.interfaces import IProtocolFactory
from twisted.internet.protocol import Factory, Protocol

#: The endpoint types twistcluster parses itself: datagram sockets.
DATAGRAM_PREFIXES = ("udp", "udp6")
#: The endpoint types known to need no TLS in the master (which never speaks
#: TLS: for C{ssl:} the workers do, but the master loads the certificate to
#: check it), and the wrappers whose inner endpoint decides.
PLAIN_KINDS = frozenset({"tcp", "tcp6", "unix", "systemd", *DATAGRAM_PREFIXES})
WRAPPER_KINDS = frozenset({"haproxy"})
#: The listen backlog of an endpoint string that gives no C{backlog=}:
#: Node's (C{net.Server.listen}), where Twisted's endpoints would use 50.
DEFAULT_BACKLOG = 511
#: The port numbers a TCP or UDP socket can bind.
PORT_RANGE = range(0, 65536)


@frozen
class ListenSpec:
    """
    One listening socket, as a worker asks the master for it.

    @ivar kind: C{"tcp"}, C{"unix"} or C{"udp"}.
    @ivar address: The interface (tcp, udp) or the absolute socket path (unix).
    @ivar port: The port (0: the kernel picks), or -1 for unix.
    @ivar backlog: The listen backlog; the first asker's wins.
    @ivar mode: The socket file's mode (unix only).
    @ivar fd: The master's descriptor of an inherited listening socket
        (C{systemd:}), or -1 for a socket the master binds.
    """

    kind: str
    address: str
    port: int = -1
    backlog: int = DEFAULT_BACKLOG
    mode: int = 0o666
    fd: int = -1

    @classmethod
    def forTCP(cls, port: int, backlog: int = DEFAULT_BACKLOG, interface: str = "") -> ListenSpec:
        return cls("tcp", interface, int(port), int(backlog))

    @classmethod
    def forUNIX(cls, address: str | bytes, backlog: int = DEFAULT_BACKLOG, mode: int = 0o666) -> ListenSpec:
        path = os.fsdecode(address)
        return cls("unix", os.path.abspath(path), -1, int(backlog), int(mode))

    @classmethod
    def forUDP(cls, port: int, interface: str = "") -> ListenSpec:
        return cls("udp", interface, int(port))

    @property
    def family(self) -> socket.AddressFamily:
        if self.kind == "unix":
            return socket.AF_UNIX
        return socket.AF_INET6 if ":" in self.address else socket.AF_INET

    @property
    def socketType(self) -> socket.SocketKind:
        return socket.SOCK_DGRAM if self.kind == "udp" else socket.SOCK_STREAM

    @property
    def addressType(self) -> int:
        """
        Node's C{addressType}: 4, 6, or -1 for a UNIX socket.
        """
        return {socket.AF_INET: 4, socket.AF_INET6: 6}.get(self.family, -1)

    def key(self, index: int) -> str:
        """
        The handle key, as Node spells it: C{address:port:addressType:fd:index}
        (with C{udp4}/C{udp6} as the address type of a datagram socket).  The
        n-th listen on the same address in every worker shares one key, and
        so one socket (and one kernel-chosen port for port 0).
        """
        addressType = f"udp{self.addressType}" if self.kind == "udp" else self.addressType
        return f"{self.address}:{self.port}:{addressType}:{self.fd}:{index}"

    def grantedBy(self, configured: ListenSpec) -> bool:
        """
        Does a master configured with C{configured} grant this spec?
        (Backlog, mode and an inherited descriptor are the master's business,
        not part of what a worker asks for.)
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
    An endpoint string that does not listen on one TCP, UNIX or UDP socket.
    """


class _ListenRecorder:
    """
    A stand-in reactor that records the listen an endpoint makes, instead of
    making it.  An adopted socket (C{systemd:}) is recorded with a duplicate
    of its descriptor, since the endpoint closes the one it adopted.
    """

    def __init__(self) -> None:
        self.specs: list[ListenSpec] = []
        self.adopted: list[tuple[int, int]] = []

    def listenTCP(
        self, port: int, factory: IProtocolFactory, backlog: int = 50, interface: str = ""
    ) -> object:
        self.specs.append(ListenSpec.forTCP(port, backlog, interface))
        return object()

    def listenSSL(
        self,
        port: int,
        factory: IProtocolFactory,
        contextFactory: object,
        backlog: int = 50,
        interface: str = "",
    ) -> object:
        return self.listenTCP(port, factory, backlog, interface)

    def listenUNIX(
        self, address: str, factory: IProtocolFactory, backlog: int = 50, mode: int = 0o666, wantPID: int = 0
    ) -> object:
        self.specs.append(ListenSpec.forUNIX(address, backlog, mode))
        return object()

    def adoptStreamPort(self, fileDescriptor: int, addressFamily: int, factory: IProtocolFactory) -> object:
        self.specs.append(_inheritedSpec(fileDescriptor, addressFamily))
        self.adopted.append((fileDescriptor, os.dup(fileDescriptor)))
        return object()

    def restoreAdopted(self) -> None:
        """
        Put each adopted descriptor back under its own number: the endpoint
        closed it, and the master serves it from now on.
        """
        for fd, kept in self.adopted:
            os.dup2(kept, fd, inheritable=False)
            os.close(kept)
        self.adopted = []

    def __getattr__(self, name: str) -> Any:
        raise UnsupportedEndpoint(f"it needs reactor.{name}, which twistcluster does not route yet")


def _inheritedSpec(fd: int, family: int) -> ListenSpec:
    """
    The spec of an inherited listening socket, from the socket itself.

    @raise UnsupportedEndpoint: It is not a listening stream socket of
        C{family}.
    """
    try:
        sock = socket.socket(fileno=os.dup(fd))
    except OSError as e:
        raise UnsupportedEndpoint(f"descriptor {fd} is not a socket: {e.strerror}") from e
    with sock:
        if sock.family != family or sock.type != socket.SOCK_STREAM:
            raise UnsupportedEndpoint(
                f"descriptor {fd} is not a {socket.AddressFamily(family).name} stream socket"
            )
        if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
            raise UnsupportedEndpoint(f"descriptor {fd} is not listening")
        name = sock.getsockname()
    if family == socket.AF_UNIX:
        path = os.fsdecode(name)
        if not path or path.startswith("\0"):
            raise UnsupportedEndpoint(f"descriptor {fd} is not a UNIX socket with a path")
        return evolve(ListenSpec.forUNIX(path), fd=fd)
    return ListenSpec("tcp", name[0], name[1], fd=fd)


def _fields(description: str) -> list[tuple[int, str]]:
    """
    Split an endpoint description at its unescaped colons, as Twisted does:
    each field's start offset and its unescaped text.
    """
    fields: list[tuple[int, str]] = []
    start, text, escaped = 0, [], False
    for offset, char in enumerate(description):
        if escaped:
            text.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ":":
            fields.append((start, "".join(text)))
            start, text = offset + 1, []
        else:
            text.append(char)
    fields.append((start, "".join(text)))
    return fields


def isDatagram(description: str) -> bool:
    return _fields(description)[0][1] in DATAGRAM_PREFIXES


def needsTLS(description: str) -> bool:
    """
    Might parsing C{description} need pyOpenSSL?  Not for the endpoint types
    known to be plain (L{PLAIN_KINDS}), wrapped or not; any other (C{ssl:},
    or a plugin's) is assumed to.
    """
    for _, kind in _fields(description):
        if kind not in WRAPPER_KINDS:
            return kind not in PLAIN_KINDS
    return True


def parseDatagram(description: str) -> tuple[ListenSpec, int]:
    """
    Parse C{udp:PORT[:interface=ADDRESS][:maxPacketSize=BYTES]} (or
    C{udp6:}, whose interface defaults to C{::}).

    @return: The spec and the largest datagram a worker reads.
    @raise ValueError: Malformed; the message says why.
    """
    fields = [text for _, text in _fields(description)]
    prefix, arguments = fields[0], fields[1:]
    positional = [a for a in arguments if "=" not in a]
    options = dict(a.split("=", 1) for a in arguments if "=" in a)
    unknown = set(options) - {"interface", "maxPacketSize"}
    if len(positional) != 1 or unknown:
        raise ValueError(f"expected {prefix}:PORT[:interface=ADDRESS][:maxPacketSize=BYTES]")
    try:
        port, maxPacketSize = int(positional[0]), int(options.get("maxPacketSize", 8192))
    except ValueError:
        raise ValueError(f"port and maxPacketSize are numbers, not {positional[0]!r}") from None
    interface = options.get("interface", "::" if prefix == "udp6" else "")
    if prefix == "udp6" and ":" not in interface:
        raise ValueError(f"udp6 needs an IPv6 interface, not {interface!r}")
    if port not in PORT_RANGE:
        raise ValueError(f"port {port} is out of range (0-65535)")
    return ListenSpec.forUDP(port, interface), maxPacketSize


def specFromDescription(description: str) -> ListenSpec:
    """
    Parse a server endpoint description into the listen it makes, with a
    backlog of L{DEFAULT_BACKLOG} unless it gives one.

    @raise ValueError: The description is malformed, or it does not listen on
        exactly one socket.  The message says why.
    """
    if isDatagram(description):
        return parseDatagram(description)[0]
    # Imported here: the module imports pyOpenSSL if it can, and a master
    # that needs no TLS leaves it out (see twistcluster._cli.options).
    from twisted.internet.endpoints import serverFromString

    recorder = _ListenRecorder()
    try:
        endpoint = serverFromString(recorder, description)
        failures: list[Any] = []
        endpoint.listen(Factory.forProtocol(Protocol)).addErrback(failures.append)
        if failures:
            failures[0].raiseException()
    except UnsupportedEndpoint:
        raise
    except (IndexError, KeyError) as e:
        if any(text == "systemd" for _, text in _fields(description)):
            raise ValueError(
                "no such inherited socket (LISTEN_FDS, LISTEN_PID and LISTEN_FDNAMES"
                " name the ones this process has)"
            ) from e
        raise ValueError(str(e) or type(e).__name__) from e
    except Exception as e:
        raise ValueError(str(e) or type(e).__name__) from e
    finally:
        recorder.restoreAdopted()
    if len(recorder.specs) != 1:
        raise UnsupportedEndpoint("it does not listen on exactly one socket")
    spec = recorder.specs[0]
    if spec.kind == "tcp" and spec.fd < 0 and spec.port not in PORT_RANGE:
        raise ValueError(f"port {spec.port} is out of range (0-65535)")
    if not any(text.startswith("backlog=") for _, text in _fields(description)):
        spec = evolve(spec, backlog=DEFAULT_BACKLOG)
    return spec


def workerDescription(description: str, spec: ListenSpec) -> str:
    """
    The description a worker listens on for a listen the master configured.

    An inherited socket (C{systemd:}) can only be found in the master (the
    environment names the master's pid, and workers do not inherit it), so
    its innermost endpoint, the last one in the string, becomes the address
    it is bound to; wrappers around it (C{haproxy:}) stay.
    """
    if spec.fd < 0:
        return description
    from twisted.internet.endpoints import quoteStringArgument  # see specFromDescription

    fields = _fields(description)
    start = next(
        offset
        for index, (offset, text) in reversed(list(enumerate(fields)))
        if text == "systemd" and all("=" in rest for _, rest in fields[index + 1 :])
    )
    if spec.kind == "unix":
        inner = f"unix:{quoteStringArgument(spec.address)}"
    else:
        prefix = "tcp6" if spec.family == socket.AF_INET6 else "tcp"
        inner = f"{prefix}:{spec.port}:interface={quoteStringArgument(spec.address)}"
    return description[:start] + inner
