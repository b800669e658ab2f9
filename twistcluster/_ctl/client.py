# -*- test-case-name: tests.test_ctl -*-
"""
Finding a running master and talking to it: one command per line, one JSON
answer per line, over its control socket.
"""

from __future__ import annotations

import errno
import json
import os
import re
import socket
from collections.abc import Mapping, Sequence
from typing import Any

from attrs import frozen

from .._common.controlpaths import searchedDirectories, socketDirectory

_SOCKET_NAME = re.compile(r"^(\d+)\.sock$")


class ControlError(Exception):
    """
    The command could not be carried out; C{str()} is the one-line reason,
    C{status} the exit status.
    """

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


#: Exit statuses of the command (sysexits.h, as twist's 64 for usage).
EX_OK = 0
EX_FAILED = 1
EX_USAGE = 64
EX_UNAVAILABLE = 69
EX_NOPERM = 77


class Connection:
    """
    A client connection to one master's control socket.
    """

    def __init__(self, path: str, timeout: float | None = 30.0) -> None:
        self.path = path
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._socket.settimeout(timeout)
        try:
            self._socket.connect(path)
        except OSError as e:
            self._socket.close()
            raise _connectError(path, e) from e
        self._buffer = b""

    def ask(self, command: str, timeout: float | None = 30.0) -> dict[str, Any]:
        """
        Send one command line and read its answer.

        @param timeout: Seconds to wait for the answer (L{None}: as long as
            it takes, for commands that answer when done).
        @raise ControlError: The master went away, or refused this client.
        """
        self._socket.settimeout(timeout)
        try:
            self._socket.sendall(command.encode("utf-8") + b"\n")
            line = self._readLine()
        except TimeoutError:
            late = f"the master at {self.path} did not answer {command!r} in time"
            raise ControlError(late, EX_UNAVAILABLE) from None
        except OSError as e:
            raise ControlError(f"lost the master at {self.path}: {e.strerror}", EX_UNAVAILABLE) from e
        if line is None:
            raise ControlError(f"the master at {self.path} went away before it answered", EX_UNAVAILABLE)
        answer = json.loads(line)
        if not answer.get("ok") and str(answer.get("error", "")).startswith("permission denied"):
            raise ControlError(f"{self.path}: {answer['error']}", EX_NOPERM)
        return answer  # type: ignore[no-any-return]

    def _readLine(self) -> bytes | None:
        while b"\n" not in self._buffer:
            data = self._socket.recv(65536)
            if not data:
                return None
            self._buffer += data
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line

    def waitClosed(self, timeout: float | None = None) -> None:
        """
        Wait until the master closes the connection (it has stopped).
        """
        self._socket.settimeout(timeout)
        try:
            while self._socket.recv(65536):
                pass
        except OSError:
            pass

    def close(self) -> None:
        self._socket.close()


def _connectError(path: str, error: OSError) -> ControlError:
    if error.errno in (errno.EACCES, errno.EPERM):
        return ControlError(f"{path}: permission denied", EX_NOPERM)
    if error.errno == errno.ENOENT:
        return ControlError(f"{path}: no control socket there (is the master running?)", EX_UNAVAILABLE)
    if error.errno == errno.ECONNREFUSED:
        return ControlError(f"{path}: no master answers there", EX_UNAVAILABLE)
    return ControlError(f"{path}: {error.strerror}", EX_UNAVAILABLE)


@frozen
class RunningMaster:
    pid: int
    path: str


def runningMasters(directories: Sequence[str]) -> list[RunningMaster]:
    """
    The masters with a default control socket in C{directories}, whose
    process is alive (a stale file of a dead master is skipped).
    """
    found: dict[int, RunningMaster] = {}
    for directory in directories:
        try:
            names = os.listdir(directory)
        except OSError:
            continue
        for name in sorted(names):
            match = _SOCKET_NAME.match(name)
            path = os.path.join(directory, name)
            if match and int(match.group(1)) not in found and _answers(int(match.group(1)), path):
                pid = int(match.group(1))
                found[pid] = RunningMaster(pid, path)
    return sorted(found.values(), key=lambda m: m.pid)


def _answers(pid: int, path: str) -> bool:
    """
    Is a master listening at C{path}, and its process alive?  (A stale file
    of a master killed with SIGKILL stays behind.)
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.setblocking(False)
    try:
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        return False
    except OSError:
        # Not ours to use (EACCES), or its backlog is full: it runs.
        return True
    finally:
        probe.close()
    return True


def pickMaster(control: str | None, pid: int | None, environ: Mapping[str, str] = os.environ) -> str:
    """
    The control socket to use: C{--control PATH}, the default socket of
    C{--pid PID}, or the only running master's.

    @raise ControlError: None runs, or several do and none was chosen (the
        message lists them: pid and listeners).
    """
    if control is not None:
        return control
    if pid is not None:
        # Wherever it may be: this user's RUNDIR, root's (a master that
        # dropped privileges to this user), the per-user temporary one.
        everywhere = searchedDirectories(environ)
        for master in runningMasters(everywhere):
            if master.pid == pid:
                return master.path
        searched = ", ".join(everywhere)
        raise ControlError(
            f"no control socket of a master with pid {pid} in {searched} (give its --control PATH)",
            EX_UNAVAILABLE,
        )
    # Only where a master started by this user, here, puts its socket: a
    # bare command never picks another user's master.
    directory = socketDirectory(environ)
    masters = runningMasters([directory])
    if not masters:
        raise ControlError(
            f"no running master found in {directory} (give --control PATH or --pid PID)", EX_UNAVAILABLE
        )
    if len(masters) > 1:
        listing = "\n".join(f"  --pid {m.pid}  {_listeners(m.path)}" for m in masters)
        raise ControlError(
            f"{len(masters)} masters are running; choose one with --pid PID or --control PATH:\n{listing}",
            EX_USAGE,
        )
    return masters[0].path


def _listeners(path: str) -> str:
    try:
        connection = Connection(path, timeout=5.0)
        try:
            answer = connection.ask("status", timeout=5.0)
        finally:
            connection.close()
    except (ControlError, ValueError):
        return f"(no answer at {path})"
    addresses = [listener["address"] for listener in answer.get("master", {}).get("listeners", [])]
    return " ".join(addresses) or "(no listeners)"
