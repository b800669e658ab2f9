"""
Processes the harness starts, each in a session (so a process group) of its
own, and the guarantee that none outlives it: every one is registered and
killed, with its group and every descendant seen, on the way out (an error,
Ctrl-C, C{SIGTERM} or C{SIGHUP}).
"""

from __future__ import annotations

import atexit
import os
import signal
import subprocess
import time
from collections.abc import Iterable, Sequence
from contextlib import suppress
from typing import IO, Any

import psutil

_live: set[Managed] = set()


class Managed:
    """
    One process started in a new session.

    @ivar seen: Every descendant seen while it ran, killed too wherever it
        was reparented (psutil checks a pid still names the same process).
    """

    def __init__(
        self,
        argv: Sequence[str],
        env: dict[str, str] | None = None,
        cwd: str | None = None,
        stdout: IO[Any] | int | None = subprocess.DEVNULL,
    ) -> None:
        self.process = subprocess.Popen(
            list(argv),
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.seen: dict[int, psutil.Process] = {}
        _live.add(self)

    @property
    def pid(self) -> int:
        return self.process.pid

    def running(self) -> bool:
        return self.process.poll() is None

    def descendants(self) -> list[psutil.Process]:
        """
        The process's live descendants, remembered in L{seen}.
        """
        try:
            found = psutil.Process(self.pid).children(recursive=True) if self.running() else []
        except psutil.Error:
            found = []
        self.seen.update((p.pid, p) for p in found)
        return found

    def stop(self, grace: float = 5.0) -> int | None:
        """
        C{SIGTERM} to the group, C{SIGKILL} after C{grace} seconds, then
        C{SIGKILL} to any descendant that left the group.

        @return: The exit status, or L{None} if it could not be reaped.
        """
        self.descendants()
        if self.running():
            _signalGroup(self.pid, signal.SIGTERM)
            with suppress(subprocess.TimeoutExpired):
                self.process.wait(grace)
        _signalGroup(self.pid, signal.SIGKILL)
        for process in self.seen.values():
            with suppress(psutil.Error):
                process.kill()
        try:
            code: int | None = self.process.wait(5)
        except subprocess.TimeoutExpired:
            code = None
        _waitGone(self.seen.values(), 5.0)
        _live.discard(self)
        return code


def _waitGone(processes: Iterable[psutil.Process], timeout: float) -> None:
    """
    Wait until each of C{processes} is gone or a zombie (this machine's init
    may be slow to reap what it inherits; psutil's C{wait_procs} waits for it).
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not all(map(_gone, processes)):
        time.sleep(0.05)


def _gone(process: psutil.Process) -> bool:
    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.Error:
        return True


def _signalGroup(pgid: int, signum: int) -> None:
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def stopAll() -> None:
    """
    Stop every process still registered.
    """
    for managed in list(_live):
        managed.stop(grace=1.0)


def _stopOnSignal(signum: int, frame: Any) -> None:
    stopAll()
    raise SystemExit(128 + signum)


def installCleanup() -> None:
    """
    Kill whatever is left when the harness exits, is interrupted (Ctrl-C
    raises KeyboardInterrupt: the C{finally} blocks and L{atexit} do the
    rest) or is sent C{SIGTERM}/C{SIGHUP}.
    """
    atexit.register(stopAll)
    signal.signal(signal.SIGTERM, _stopOnSignal)
    signal.signal(signal.SIGHUP, _stopOnSignal)
