# -*- test-case-name: tests.test_twistedinternals, tests.test_handover -*-
"""
Every private name of Twisted (and one of CPython's) that twistcluster uses,
in one place.

Twisted's public API has no way to adopt a socket with a transport or port
class of one's own (C{adoptStreamConnection} and C{adoptStreamPort} pick
Twisted's), to send a batch of descriptors in one C{SCM_RIGHTS} message, or
to see that the kernel truncated the descriptors it received, or to answer
AMP's boxes without its Deferreds; the worker's lean TCP path and the
master's accept loop subclass Twisted's C{tcp}/C{unix} classes and read a
few of their private attributes.  Nothing else in twistcluster imports
C{twisted.internet.tcp} or C{twisted.internet.unix}, or reads a Twisted name
that starts with an underscore: it goes through this module.

L{PRIVATE_NAMES} lists each private name with the class (or module) that
must have it; C{tests/test_twistedinternals.py} checks every one against the
installed Twisted, on real instances, and names the one that moved.  Tested
with the Twisted releases that C{setup.cfg} allows (26.4 and 26.10).
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from twisted.internet import abstract, process, tcp, unix
from twisted.internet.interfaces import IProcessProtocol, IProtocolFactory, IReactorFDSet
from twisted.protocols import amp
from twisted.protocols.haproxy import _wrapper as haproxyWrapper
from twisted.web import http

#: The classes twistcluster's transports and ports extend (their
#: constructors and the private hooks below are not a public API).
TCPServer = tcp.Server
TCPPort = tcp.Port
UNIXServer = unix.Server
UNIXPort = unix.Port

#: Twisted's PROXY protocol wrapper and its factory, which C{haproxy:}
#: endpoints build (only C{proxyEndpoint} is public).
HAProxyProtocolWrapper = haproxyWrapper.HAProxyProtocolWrapper
HAProxyWrappingFactory = haproxyWrapper.HAProxyWrappingFactory

_Server = TypeVar("_Server", bound=tcp.Server)
_UNIXServer = TypeVar("_UNIXServer", bound=unix.Server)
_Port = TypeVar("_Port", bound=tcp.Port)
_UNIXPort = TypeVar("_UNIXPort", bound=unix.Port)

#: (owner, name): every private name this module reads, calls or overrides.
#: An owner that is a class is checked on a real instance (names set in
#: C{__init__} count).
PRIVATE_NAMES: list[tuple[object, str]] = [
    (tcp.Server, "_fromConnectedSocket"),
    (tcp.Server, "_aborting"),
    (abstract.FileDescriptor, "_tempDataLen"),
    (unix.Server, "_fromConnectedSocket"),
    (unix.Server, "_sendmsgQueue"),
    (unix.Server, "_writeSomeDataBase"),
    (unix.Server, "_dataReceived"),
    (tcp.Port, "_fromListeningDescriptor"),
    (tcp.Port, "_preexistingSocket"),
    (tcp.Port, "_buildAddr"),
    (tcp.Port, "_logConnectionLostMsg"),
    (tcp.Port, "_shouldShutdown"),
    (unix.Port, "_fromListeningDescriptor"),
    (unix.Port, "_preexistingSocket"),
    (unix.Port, "_logConnectionLostMsg"),
    (tcp, "_reservedFD"),
    (amp.AMP, "_nextTag"),
    (amp.AMP, "_failAllReason"),
    (amp.AMP, "_outstandingRequests"),
    (socket.socket, "_accept"),
    (haproxyWrapper, "HAProxyProtocolWrapper"),
    (haproxyWrapper, "HAProxyWrappingFactory"),
    (haproxyWrapper.HAProxyProtocolWrapper, "_proxyInfo"),
    (amp.BinaryBoxProtocol, "_unprocessed"),
    (amp.BinaryBoxProtocol, "_currentBox"),
    (amp.BinaryBoxProtocol, "_currentKey"),
    (http.HTTPFactory, "_logFile"),
    (http.HTTPFactory, "_openLogFile"),
    (process.Process, "_reactor"),
]


def adoptTCPConnection(
    cls: type[_Server], reactor: IReactorFDSet, fd: int, family: int, factory: IProtocolFactory
) -> _Server | None:
    """
    What C{reactor.adoptStreamConnection} does for TCP, with the transport
    class C{cls}.  The socket must be non-blocking; C{fd} is duplicated.

    @return: The transport, or L{None} if C{factory} refused the connection.
    """
    adopted: _Server | None = cls._fromConnectedSocket(fd, family, factory, reactor)
    return adopted


def adoptUNIXConnection(
    cls: type[_UNIXServer], reactor: IReactorFDSet, fd: int, factory: IProtocolFactory
) -> _UNIXServer | None:
    """
    What C{reactor.adoptStreamConnection} does for C{AF_UNIX}, with the
    transport class C{cls}.  C{fd} is duplicated.
    """
    adopted: _UNIXServer | None = cls._fromConnectedSocket(fd, factory, reactor)
    return adopted


def adoptTCPPort(
    cls: type[_Port], reactor: IReactorFDSet, fd: int, family: int, factory: IProtocolFactory
) -> _Port:
    """
    What C{reactor.adoptStreamPort} does for TCP, with the port class C{cls},
    not yet listening.  C{fd} is duplicated.
    """
    adopted: _Port = cls._fromListeningDescriptor(reactor, fd, family, factory)
    return adopted


def adoptUNIXPort(
    cls: type[_UNIXPort], reactor: IReactorFDSet, fd: int, factory: IProtocolFactory
) -> _UNIXPort:
    """
    What C{reactor.adoptStreamPort} does for C{AF_UNIX}, with the port class
    C{cls}, not yet listening.  C{fd} is duplicated.
    """
    adopted: _UNIXPort = cls._fromListeningDescriptor(reactor, fd, factory)
    return adopted


def takeAdoptedSocket(port: tcp.Port | unix.Port) -> socket.socket | None:
    """
    The listening socket an adopted port was made from, which the port gives
    up (L{None} for a port that binds its own).
    """
    skt, port._preexistingSocket = port._preexistingSocket, None
    return skt


def reserveDescriptor() -> None:
    """
    Keep the spare descriptor Twisted's ports close to accept-and-close a
    connection when descriptors run out (as C{tcp.Port.startListening} does).
    """
    tcp._reservedFD.reserve()


def peerAddress(port: tcp.Port, address: Any) -> Any:
    """
    The L{twisted.internet.address} object C{port} gives its protocols for
    the peer C{address} returned by C{accept()}.
    """
    return port._buildAddr(address)


def isAborting(transport: tcp.Connection) -> bool:
    """
    Whether C{abortConnection()} was called on C{transport}.
    """
    return transport._aborting


def hasUnsentData(transport: abstract.FileDescriptor) -> bool:
    """
    Whether C{transport} holds written data it has not sent yet.
    """
    return bool(transport.dataBuffer or transport._tempDataLen)


def sendsNothing(transport: unix.Server) -> bool:
    """
    Whether C{transport} holds nothing to send: no written data, no queued
    descriptor.
    """
    return not (transport._sendmsgQueue or transport.dataBuffer or transport._tempDataLen)


def queuedDescriptors(transport: unix.Server) -> list[int]:
    """
    The descriptors C{transport.sendFileDescriptor} queued, oldest first: the
    list itself, for the caller to take from.
    """
    queue: list[int] = transport._sendmsgQueue
    return queue


def deliverReceivedData(transport: unix.Server, data: bytes) -> Any:
    """
    Give C{data}, just read, to C{transport}'s protocol as C{doRead} does
    (an empty read is the end of the stream).

    @return: What C{doRead} returns: L{None}, or why the connection ends.
    """
    return transport._dataReceived(data)


def writeWithoutDescriptors(transport: unix.Server, data: Any) -> Any:
    """
    C{writeSomeData} of the stream C{transport} is built on, bypassing its
    descriptor queue (as C{unix.Server} does once the queue is empty).
    """
    base: Any = transport._writeSomeDataBase
    return base.writeSomeData(transport, data)


class QuietPort:
    """
    Mixed into a port (before Twisted's class): no "(... Closed)" log line
    when it stops listening.
    """

    def _logConnectionLostMsg(self) -> None:
        pass


class SharedSocketPort:
    """
    Mixed into a port (before Twisted's class) whose listening socket others
    share: stopping it never C{shutdown()}s the socket, which would end it
    for every process that holds it.
    """

    _shouldShutdown = False


def nextAMPTag(protocol: amp.AMP) -> bytes:
    """
    The C{_ask} tag of the next command C{protocol} sends (its counter moves
    on), as C{callRemote} makes it.
    """
    tag: bytes = protocol._nextTag()
    return tag


def failedAMPReason(protocol: amp.AMP) -> Any:
    """
    Why C{protocol} fails every command now (its connection was lost): a
    L{Failure}, or L{None} while it still sends.
    """
    return protocol._failAllReason


def awaitAMPAnswer(protocol: amp.AMP, tag: bytes, answer: Any) -> None:
    """
    Let C{answer} (a L{Deferred}) fire with the box that answers (or fails)
    the command sent with C{tag}, as C{callRemote}'s Deferred does.
    """
    protocol._outstandingRequests[tag] = answer


def rawAccept(skt: socket.socket) -> Callable[[], tuple[int, Any]]:
    """
    C{accept()} of a listening socket that returns the new descriptor (made
    with C{accept4(SOCK_CLOEXEC)}) and the peer's address, without building
    a Python socket object per connection.
    """
    accept: Callable[[], tuple[int, Any]] = skt._accept  # type: ignore[attr-defined]
    return accept


def proxyHeaderRead(wrapper: haproxyWrapper.HAProxyProtocolWrapper) -> bool:
    """
    Whether C{wrapper}'s connection has sent its PROXY header (and the
    wrapper has parsed it).
    """
    return wrapper._proxyInfo is not None


# What a master carries across the exec of an upgrade (twistcluster._master.handover):
# where AMP stands on a control channel, and the worker processes it spawned.


def unparsedBytes(protocol: amp.BinaryBoxProtocol) -> bytes:
    """
    The bytes C{protocol} has received but not yet delivered as a box, as
    they came: the keys and values already parsed of a box not yet complete,
    then the rest of the buffer.  Fed to a new protocol on the same stream,
    they give it what this one would have parsed next.
    """
    parts: list[bytes] = []
    box = protocol._currentBox
    if box is not None:
        for key, value in box.items():
            parts += [struct.pack("!H", len(key)), key, struct.pack("!H", len(value)), value]
        if protocol.state == "value":
            current = protocol._currentKey
            assert current is not None
            parts += [struct.pack("!H", len(current)), current]
    parts.append(protocol._unprocessed)
    return b"".join(parts)


def outputDescriptors(transport: object) -> dict[int, int]:
    """
    The descriptors a spawned process's transport reads the child's output
    pipes from, by the child's descriptor number.
    """
    pipes: dict[int, Any] = getattr(transport, "pipes", {})
    return {
        childFD: reader.fileno()
        for childFD, reader in pipes.items()
        if isinstance(reader, process.ProcessReader)
    }


def pauseOutput(transport: object, paused: bool) -> None:
    """
    Stop (or start again) reading a spawned process's output pipes.
    """
    for reader in getattr(transport, "pipes", {}).values():
        if isinstance(reader, process.ProcessReader):
            reader.stopReading() if paused else reader.startReading()


class AdoptedProcess(process.Process):
    """
    A child process this process did not spawn itself (it was spawned before
    an C{exec} that kept its pid), as C{reactor.spawnProcess} would have
    given it: its output pipes are read, and it is reaped when it exits,
    its protocol told as for any spawned process.
    """

    def __init__(
        self,
        reactor: IReactorFDSet,
        pid: int,
        protocol: IProcessProtocol,
        outputs: Mapping[int, int],
        status: int | None = None,
    ) -> None:
        """
        @param outputs: The descriptors of its output pipes, by the child's
            descriptor number; each is read from now on, and closed at its
            end.
        @param status: Its wait status, if it was already reaped.
        """
        process.BaseProcess.__init__(self, protocol)
        self._reactor = reactor
        self.pid = pid
        self.pipes = {
            childFD: self.processReaderFactory(reactor, self, childFD, fd) for childFD, fd in outputs.items()
        }
        protocol.makeConnection(self)
        if status is not None:
            self.processEnded(status)
        else:
            process.registerReapProcessHandler(pid, self)


def hasAccessLog(factory: object) -> bool:
    """
    Whether C{factory} is a C{twisted.web} C{HTTPFactory} (a C{Site}, say)
    with its access log file open.
    """
    return getattr(factory, "_logFile", None) is not None


def reopenAccessLog(factory: http.HTTPFactory, path: str) -> None:
    """
    Open C{factory}'s access log at C{path} again, after logrotate moved it,
    as C{HTTPFactory} opens it (its subclasses' own way too), and close the
    file it had.

    @raise OSError: It cannot be opened; the file it had stays.
    """
    old = factory._logFile
    factory._logFile = factory._openLogFile(path)
    if old is not None:
        old.close()
