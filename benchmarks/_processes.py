"""
Processes the harness starts, each in its own process group, and the
guarantee that none outlives it: every one is registered, and killed (with
its group and its descendants) on the way out, even on Ctrl-C or an error.
"""

from __future__ import annotations

import atexit
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from typing import IO, Any

from ._procstat import descendants

_live: set[Managed] = set()


class Managed:
    """
    One process started in a new session (so its own process group).

    @ivar descendantsSeen: Every descendant seen while it ran; they are
        killed too, wherever they were reparented.
    """

    def __init__(
        self,
        argv: Sequence[str],
        env: dict[str, str] | None = None,
        cwd: str | None = None,
        stdout: IO[Any] | int | None = subprocess.DEVNULL,
        stderr: IO[Any] | int | None = subprocess.STDOUT,
    ) -> None:
        self.argv = list(argv)
        self.process = subprocess.Popen(
            self.argv,
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
        )
        self.descendantsSeen: set[int] = set()
        _live.add(self)

    @property
    def pid(self) -> int:
        return self.process.pid

    def running(self) -> bool:
        return self.process.poll() is None

    def noteDescendants(self) -> list[int]:
        """
        Remember (and return) the process's live descendants.
        """
        found = descendants(self.pid) if self.running() else []
        self.descendantsSeen.update(found)
        return found

    def stop(self, grace: float = 5.0) -> int | None:
        """
        C{SIGTERM} to the group, C{SIGKILL} after C{grace} seconds, then
        C{SIGKILL} to any descendant that escaped the group.

        @return: The exit status, or L{None} if it could not be reaped.
        """
        self.noteDescendants()
        if self.running():
            _signalGroup(self.pid, signal.SIGTERM)
            try:
                self.process.wait(grace)
            except subprocess.TimeoutExpired:
                pass
        _signalGroup(self.pid, signal.SIGKILL)
        for pid in self.descendantsSeen:
            _killQuietly(pid)
        try:
            code = self.process.wait(5)
        except subprocess.TimeoutExpired:
            code = None
        _waitGone(self.descendantsSeen, 5.0)
        _live.discard(self)
        return code


def _signalGroup(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def _killQuietly(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _waitGone(pids: set[int], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(_alive(pid) for pid in pids):
            return
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def stopAll() -> None:
    """
    Stop every process still registered (at exit, or on a signal).
    """
    for managed in list(_live):
        managed.stop(grace=1.0)


def _stopOnSignal(signum: int, frame: Any) -> None:
    stopAll()
    raise SystemExit(128 + signum)


def installCleanup() -> None:
    """
    Kill whatever is left when the harness exits, is interrupted (Ctrl-C
    raises KeyboardInterrupt, and the C{finally} blocks plus L{atexit} do the
    rest) or is sent C{SIGTERM}/C{SIGHUP}.
    """
    atexit.register(stopAll)
    signal.signal(signal.SIGTERM, _stopOnSignal)
    signal.signal(signal.SIGHUP, _stopOnSignal)
