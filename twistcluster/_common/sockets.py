# -*- test-case-name: tests.test_shared -*-
"""
Listening sockets the master creates but never reads: the one every worker
shares (C{none}, UDP), and the C{SO_REUSEPORT} sockets it makes one per
worker (C{reuseport}).  Plain sockets, not Twisted ports: nothing here is
registered with the reactor, and closing one is a plain C{close()}, never a
C{shutdown()} (which would end the socket in every worker too).
"""

from __future__ import annotations

import errno
import os
import socket
import stat
import struct
from typing import Any

from twisted.internet.error import CannotListenError
from twisted.logger import Logger

from .endpoints import ListenSpec

_log = Logger()


#: The longest path a UNIX socket address holds (sun_path, less the NUL).
SUN_PATH_MAX = 107


def bindablePath(path: str) -> str:
    """
    A UNIX socket path too long for C{sun_path} is bound relative to the
    current directory when that is short enough, as Node's primary does.
    """
    if len(os.fsencode(path)) <= SUN_PATH_MAX:
        return path
    relative = os.path.relpath(path)
    return relative if len(os.fsencode(relative)) < len(os.fsencode(path)) else path


def removeStaleSocketFile(path: str) -> None:
    """
    Make way for a UNIX socket at C{path}: remove a socket file that nothing
    listens on any more (left by a process that died), but never a live
    socket, and never anything that is not a socket.

    @raise CannotListenError: C{path} is a live socket, or not a socket.
    """
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise CannotListenError(None, path, OSError(errno.EEXIST, "the path exists and is not a socket"))
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.setblocking(False)
    try:
        probe.connect(path)
    except ConnectionRefusedError:
        os.unlink(path)
        _log.info("removed the stale socket file {path}", path=path)
        return
    except BlockingIOError:
        pass  # Its backlog is full: very much alive.
    finally:
        probe.close()
    raise CannotListenError(None, path, OSError(errno.EADDRINUSE, os.strerror(errno.EADDRINUSE)))


def _bindAddress(spec: ListenSpec, port: int) -> Any:
    if spec.kind == "unix":
        return bindablePath(spec.address)
    if spec.family == socket.AF_INET6:
        # getaddrinfo understands scoped addresses (fe80::1%eth0).
        flags = socket.AI_NUMERICHOST | socket.AI_PASSIVE
        return socket.getaddrinfo(spec.address, port, spec.family, spec.socketType, 0, flags)[0][4]
    return (spec.address, port)


def bindSocket(
    spec: ListenSpec, reusePort: bool = False, port: int | None = None, listen: bool = True
) -> socket.socket:
    """
    Create, bind and (for a stream) listen on a socket as C{spec} says.

    @param reusePort: Set C{SO_REUSEPORT}, so that more sockets may bind the
        same address.
    @param port: Bind this port instead of the spec's (the one the kernel
        chose for the first socket of a port-0 listen).
    @param listen: Listen (a stream socket only); a socket that only holds
        the port must not, or the kernel would queue connections on it.
    @raise CannotListenError: Binding failed.
    """
    port = spec.port if port is None else port
    if spec.kind == "unix":
        removeStaleSocketFile(bindablePath(spec.address))
    sock = socket.socket(spec.family, spec.socketType)
    try:
        if spec.kind != "unix":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reusePort:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(_bindAddress(spec, port))
        if spec.kind == "unix":
            os.chmod(spec.address, spec.mode)
        if listen and spec.socketType == socket.SOCK_STREAM:
            sock.listen(spec.backlog)
        # The flag belongs to the open file, which every worker shares.
        sock.setblocking(False)
    except OSError as e:
        sock.close()
        raise CannotListenError(spec.address, port, e) from e
    return sock


def inheritedSocket(spec: ListenSpec, fd: int | None = None) -> socket.socket:
    """
    A socket object of the master's own for an inherited listening socket
    (a duplicate: the inherited descriptor stays as it is): the one C{spec}
    names, or C{fd}.
    """
    sock = socket.socket(spec.family, spec.socketType, fileno=os.dup(spec.fd if fd is None else fd))
    sock.setblocking(False)
    return sock


def socknameOf(sock: socket.socket, spec: ListenSpec) -> dict[str, Any]:
    """
    The bound address, as Node reports it: C{address}, C{port},
    C{addressType} (4, 6, or -1 for a UNIX socket).
    """
    name = sock.getsockname()
    if spec.family == socket.AF_UNIX:
        return {"address": os.fsdecode(name), "port": -1, "addressType": -1}
    return {"address": name[0], "port": name[1], "addressType": spec.addressType}


#: Offsets in Linux's struct tcp_info: for a listening socket, tcpi_unacked
#: is the length of its accept queue and tcpi_sacked its limit (the backlog).
_TCP_INFO_QUEUE = struct.Struct("=8x4x4x4x4xII")


def acceptQueue(sock: socket.socket) -> tuple[int, int] | None:
    """
    How many connections wait in a listening TCP socket's accept queue in
    the kernel, and how many it may hold; L{None} for another kind of
    socket, or where the kernel does not say.
    """
    try:
        if sock.family not in (socket.AF_INET, socket.AF_INET6) or sock.type != socket.SOCK_STREAM:
            return None
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_QUEUE.size)
    except OSError:
        return None
    if len(info) < _TCP_INFO_QUEUE.size:
        return None
    waiting, limit = _TCP_INFO_QUEUE.unpack(info)
    return waiting, limit


def describeAddress(spec: ListenSpec, sockname: dict[str, Any]) -> str:
    """
    A bound address as one token a script can parse: C{tcp:127.0.0.1:8080},
    C{tcp6:[::1]:8080}, C{udp:127.0.0.1:9999}, C{udp6:[::1]:9999} or
    C{unix:/run/app.sock}.
    """
    if sockname["addressType"] == -1:
        return f"unix:{sockname['address']}"
    kind = "udp" if spec.kind == "udp" else "tcp"
    if sockname["addressType"] == 6:
        return f"{kind}6:[{sockname['address']}]:{sockname['port']}"
    return f"{kind}:{sockname['address']}:{sockname['port']}"
