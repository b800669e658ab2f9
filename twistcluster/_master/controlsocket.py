# -*- test-case-name: tests.test_controlsocket -*-
"""
The master's control socket: a UNIX socket where an operator's tools (the
C{twistcluster} command, or C{socat - UNIX-CONNECT:PATH} by hand) send one
command per line and read one JSON answer per line.

Only the master's own user (after a privilege drop, the user it dropped to)
and root may use it: the file is created with mode 0600 (under a umask, so
it never exists with a wider one) and every peer's uid is checked with
C{SO_PEERCRED} when it connects, whatever the file's mode has become.

By default each master has its own socket, C{RUNDIR/twistcluster/PID.sock}
(L{defaultControlPath}), so several masters of one user coexist and a
client finds them all by listing one directory.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import stat
import struct
from collections.abc import Callable, Mapping
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.endpoints import UNIXServerEndpoint
from twisted.internet.error import CannotListenError, ConnectionDone
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure

from .._common.controlpaths import ROOT_RUNDIR, SOCKET_DIRECTORY, perUserDirectory, runtimeDirectory
from .._common.reactors import IEndpointReactor
from .._common.sockets import removeStaleSocketFile
from .binding import StartupError


class _ControlFactory(Factory):
    """
    The control socket's factory, named as such in Twisted's C{starting on}
    line.
    """

    noisy = False

    def logPrefix(self) -> str:
        return "twistcluster control socket"


class ControlSocketError(StartupError):
    """
    The control socket cannot be made; the message says why, in one line.
    """


def _ownDirectory(path: str, mode: int) -> None:
    """
    Make C{path} a directory of this user's with C{mode}, or check that it is
    one (not a link, not someone else's, not open to others): a per-user
    directory under a shared temporary directory could have been made by
    anyone first.
    """
    try:
        os.mkdir(path, mode)
        os.chmod(path, mode)
    except FileExistsError:
        pass
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o077:
        raise ControlSocketError(f"{path} is not a private directory of this user's; remove it")


def prepareDefaultDirectory(environ: Mapping[str, str] = os.environ) -> str:
    """
    Make the default sockets' directory, as private as it can be: this
    user's only, except C{/run/twistcluster} (a root master's), which is
    C{1777} like C{/tmp}, so that masters that drop to different users can
    each remove their own socket, and no one anyone else's.

    @return: The directory.
    """
    rundir = runtimeDirectory(environ)
    if rundir == perUserDirectory(os.geteuid()):
        _ownDirectory(rundir, 0o700)
    directory = os.path.join(rundir, SOCKET_DIRECTORY)
    shared = os.geteuid() == 0 and rundir == ROOT_RUNDIR
    mode = 0o1777 if shared else 0o700
    try:
        os.mkdir(directory, mode)
        os.chmod(directory, mode)
    except FileExistsError:
        pass
    except OSError as e:
        raise ControlSocketError(f"cannot make {directory}: {e.strerror}") from e
    return directory


def peerCredentials(transport: Any) -> tuple[int, int, int]:
    """
    The pid, uid and gid of the process at the other end of a UNIX socket
    (C{SO_PEERCRED}: the kernel's word, taken when it connected).
    """
    size = struct.calcsize("3i")
    data = transport.getHandle().getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, size)
    pid, uid, gid = struct.unpack("3i", data)
    return pid, uid, gid


#: A command's implementation: the words after the command's name, to the
#: answer (a JSON object), or a Deferred of it.
Command = Callable[[list[str]], "dict[str, Any] | Deferred[dict[str, Any]]"]


class ControlProtocol(LineReceiver):
    """
    One client of the control socket: each line is a command and its
    arguments, separated by spaces; each answer is one line of JSON with
    C{"ok"}, in the order of the commands.
    """

    delimiter = b"\n"
    MAX_LENGTH = 4096
    #: Seconds a refused client has to close its end.
    REFUSED_GRACE = 10.0
    _refused = False
    _closing: Any = None
    _log = Logger()

    def __init__(
        self, commands: Mapping[str, Command], allowed: Callable[[int], bool], clients: set[ControlProtocol]
    ) -> None:
        self._commands = commands
        self._allowed = allowed
        self._clients = clients
        self._answered: Deferred[Any] = succeed(None)
        #: The command being run, if any.
        self.running: str | None = None

    def connectionMade(self) -> None:
        self._clients.add(self)
        pid, uid, gid = peerCredentials(self.transport)
        if not self._allowed(uid):
            self._log.warn(
                "control socket: refused pid {pid} of uid {uid} (only uid {own} and root may connect)",
                pid=pid,
                uid=uid,
                own=os.geteuid(),
            )
            self._answer({"ok": False, "error": f"permission denied: uid {uid} may not control this master"})
            self._refuse()

    def _refuse(self) -> None:
        # Half-close, and read (and ignore) what the client sends until it
        # closes: closing with its command unread would make the kernel
        # reset the connection, and the client would miss the answer.
        self._refused = True
        transport: Any = self.transport
        transport.loseWriteConnection()
        self._closing = transport.reactor.callLater(self.REFUSED_GRACE, transport.abortConnection)

    def connectionLost(self, reason: Failure | None = None) -> None:
        self._clients.discard(self)
        if self._closing is not None and self._closing.active():
            self._closing.cancel()

    def lineReceived(self, line: bytes) -> None:
        if self._refused:
            return
        words = line.decode("utf-8", "replace").split()
        if not words:
            return
        # One at a time, in order: a long command (reload) delays the
        # answers of the ones after it, never mixes with them.
        self._answered.addCallback(lambda _: self._run(words))

    def lineLengthExceeded(self, line: bytes) -> None:
        if not self._refused:
            self._answer({"ok": False, "error": f"a command is at most {self.MAX_LENGTH} bytes"})
            self._refuse()

    def _run(self, words: list[str]) -> Deferred[None]:
        name, arguments = words[0], words[1:]
        command = self._commands.get(name)
        if command is None:
            known = ", ".join(sorted(self._commands))
            self._answer({"ok": False, "error": f"unknown command {name!r} (commands: {known})"})
            return succeed(None)
        self.running = name
        answer: Deferred[Any] = maybeDeferred(command, arguments)
        answer.addErrback(self._failed, name)
        answer.addCallback(self._answer)
        return answer

    def awaitAnswer(self, answer: Deferred[dict[str, Any]]) -> None:
        """
        Answer a command that an earlier image of the master was asked (an
        upgrade, carried across it) once C{answer} fires.
        """
        self.running = "upgrade"
        self._answered = answer.addCallback(self._answer)

    def _failed(self, reason: Failure, name: str) -> dict[str, Any]:
        self._log.failure("control socket: {command} failed", reason, command=name)
        return {"ok": False, "error": f"{name} failed: {reason.getErrorMessage()}"}

    def _answer(self, answer: dict[str, Any]) -> None:
        self.running = None
        if self.transport is not None and self.connected:
            self.transport.write(json.dumps(answer, separators=(",", ":")).encode("utf-8") + b"\n")


class ControlSocket(Service):
    """
    The control socket of one master, bound when the service starts (before
    any privilege drop, then given to the user it drops to) and removed when
    it stops.

    @ivar path: Where the socket is.
    @ivar _explicit: Whether the path was given (C{--control PATH}); the
        default one's directory is made if need be.
    @ivar _owner: The uid and gid the socket file is given to, if not the
        master's own (a master that is about to drop privileges).
    """

    _log = Logger()
    name = "control"

    def __init__(
        self,
        reactor: IEndpointReactor,
        path: str,
        commands: Mapping[str, Command],
        explicit: bool = True,
        owner: tuple[int, int] | None = None,
        upgrade: Any = None,
    ) -> None:
        """
        @param upgrade: The master's upgrade
            (L{twistcluster._master.upgrade.MasterUpgrade}): the socket, and
            the connections waiting for the upgrade's outcome, are carried
            across it.
        """
        self._reactor = reactor
        self.path = path
        self._commands = commands
        self._explicit = explicit
        self._owner = owner
        self._port: Any = None
        self._clients: set[ControlProtocol] = set()
        self._upgrade = upgrade
        if upgrade is not None:
            upgrade.carryListener(self.name, lambda: None if self._port is None else self._port.fileno())
            upgrade.carryRequesters(self._requesters)

    def allowed(self, uid: int) -> bool:
        """
        May a peer of C{uid} use the socket?  This process's user (after a
        privilege drop, the one it dropped to) and root.
        """
        return uid in (os.geteuid(), 0)

    def _requesters(self) -> list[int]:
        """
        The connections waiting for an upgrade's outcome, no longer read
        (they are carried across the upgrade, whose new image answers them).
        """
        waiting = [c.transport for c in self._clients if c.running == "upgrade" and c.transport is not None]
        for transport in waiting:
            transport.stopReading()  # type: ignore[attr-defined]
        return [transport.fileno() for transport in waiting]  # type: ignore[attr-defined]

    def _resume(self, fd: int) -> None:
        """
        Serve the socket an earlier image of the master bound (an upgrade),
        and answer the connections that asked for it when it is done.
        """
        from .resume import adoptListeningPort

        factory = _ControlFactory.forProtocol(self._buildProtocol)
        self._port = adoptListeningPort(self._reactor, fd, factory)
        # Its answer, the transport, is not part of IReactorSocket.
        adoptConnection: Callable[..., Any] = self._reactor.adoptStreamConnection
        for requester in self._upgrade.adoptedRequesters():
            client = adoptConnection(requester, socket.AF_UNIX, factory)
            client.protocol.awaitAnswer(self._upgrade.outcome().addCallback(upgradeAnswer))
        super().startService()
        self._log.info("control socket at {path} (adopted)", path=self.path)

    def startService(self) -> None:
        """
        Bind the socket, or raise L{ControlSocketError}.
        """
        adopted = None if self._upgrade is None else self._upgrade.adoptedListener(self.name)
        if adopted is not None:
            self._resume(adopted)
            return
        if not self._explicit:
            prepareDefaultDirectory()
        elif not os.path.isdir(os.path.dirname(os.path.abspath(self.path))):
            raise ControlSocketError(f"--control {self.path}: no such directory")
        try:
            removeStaleSocketFile(self.path)
        except CannotListenError as e:
            why = e.socketError.strerror if isinstance(e.socketError, OSError) else str(e.socketError)
            if isinstance(e.socketError, OSError) and e.socketError.errno == errno.EADDRINUSE:
                why = "another master is serving on it"
            raise ControlSocketError(f"--control {self.path}: {why}") from e
        self._port = self._bind()
        if self._owner is not None:
            os.chown(self.path, *self._owner)
        super().startService()
        self._log.info("control socket at {path}", path=self.path)

    def _bind(self) -> Any:
        factory = _ControlFactory.forProtocol(self._buildProtocol)
        bound: list[Any] = []
        # Created 0600 (never wider, even for a moment): the umask is the
        # process's, and nothing else runs while the reactor thread binds.
        umask = os.umask(0o177)
        try:
            UNIXServerEndpoint(self._reactor, self.path, backlog=16, mode=0o600).listen(factory).addBoth(
                bound.append
            )
        finally:
            os.umask(umask)
        [result] = bound
        if isinstance(result, Failure):
            raise ControlSocketError(f"--control {self.path}: {result.getErrorMessage()}")
        return result

    def _buildProtocol(self) -> ControlProtocol:
        return ControlProtocol(self._commands, self.allowed, self._clients)

    def stopService(self) -> Deferred[None]:
        """
        Close the socket (its file goes) and every client connection.
        """
        super().stopService()
        if self._port is None:
            return succeed(None)
        port, self._port = self._port, None
        for client in list(self._clients):
            if client.transport is not None:
                client.transport.loseConnection()
        return maybeDeferred(port.stopListening)

    def abandon(self) -> None:
        """
        Remove the socket file at once: the master failed to start, and the
        reactor will never run to close it.
        """
        if self._port is not None:
            self._port, port = None, self._port
            port.connectionLost(Failure(ConnectionDone()))


def upgradeAnswer(outcome: dict[str, Any]) -> dict[str, Any]:
    """
    The control socket's answer to C{upgrade}, from its outcome.
    """
    if outcome["result"] == "done":
        return {"ok": True, "upgrade": outcome}
    return {"ok": False, "error": f"upgrade {outcome['result']}: {outcome['reason']}", "upgrade": outcome}
