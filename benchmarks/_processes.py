"""
Processes the harness starts, each in a session (a process group) of its own,
and the guarantee that none outlives it: each is killed, with its group and
every descendant seen, on the way out (an error, Ctrl-C, C{SIGTERM} or
C{SIGHUP}).
"""

from __future__ import annotations

import atexit
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from contextlib import suppress
from pathlib import Path
from subprocess import DEVNULL, STDOUT
from typing import IO, Any

import psutil

PROJECT = Path(__file__).resolve().parent.parent
_live: set[Managed] = set()


class Managed(subprocess.Popen[bytes]):
    """
    A process started in a new session, in the project's directory.

    @ivar seen: Every descendant seen while it ran, killed too wherever it
        was reparented (psutil checks that a pid still names that process).
    """

    def __init__(
        self, argv: Sequence[str], env: dict[str, str] | None = None, stdout: IO[Any] | int = DEVNULL
    ) -> None:
        super().__init__(
            argv, env=env, cwd=PROJECT, stdin=DEVNULL, stdout=stdout, stderr=STDOUT, start_new_session=True
        )
        self.seen: dict[int, psutil.Process] = {}
        _live.add(self)

    def descendants(self) -> list[psutil.Process]:
        """
        The process's live descendants, remembered in L{seen}.
        """
        found: list[psutil.Process] = []
        with suppress(psutil.Error):
            found = psutil.Process(self.pid).children(recursive=True) if self.poll() is None else []
        self.seen.update((p.pid, p) for p in found)
        return found

    def stop(self, grace: float = 5.0) -> None:
        """
        C{SIGTERM} to the group, C{SIGKILL} after C{grace} seconds to the
        group and to every descendant that left it; wait until all are gone.
        """
        self.descendants()
        for signum, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
            with suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signum)
            with suppress(subprocess.TimeoutExpired):
                self.wait(wait)
        for process in self.seen.values():
            with suppress(psutil.Error):
                process.kill()
        # Gone or a zombie: this machine's init may be slow to reap what it inherits.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not all(map(_gone, self.seen.values())):
            time.sleep(0.05)
        _live.discard(self)


def _gone(process: psutil.Process) -> bool:
    try:
        return bool(process.status() == psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return True


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
