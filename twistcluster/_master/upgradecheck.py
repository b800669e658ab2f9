# -*- test-case-name: tests.test_upgradecheck -*-
"""
The upgrade's check (einhorn's C{--upgrade-check}): the master's command
runs again, as the operator typed it, in a throwaway process that goes
through the whole start-up of the new code (twistcluster and Twisted
import, the command line parses, FACTORY or the subcommand loads, the
master is built) and stops short of binding and taking over
(L{answerCheck}, in the new code).  It says whether the new master can take
over this one's state, and how its interpreter runs it (L{RunSpec}), on a
line of its standard output.

If it fails, nothing has changed: the reason is its own last word (the one
line of a bad command line, or a traceback's last line).
"""

from __future__ import annotations

import json
import os
import sys
from collections import Counter
from collections.abc import Sequence
from typing import Any, NoReturn

from attrs import frozen
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure

from .._common.endpoints import ListenSpec
from .._common.reactors import ISpawningReactor
from .carried import CHECK_VARIABLE, FORMAT, Launch, RunSpec
from .relaunch import thisRunSpec

#: How the check's answer starts, on a line of its standard output.
ANSWER_MARK = "\x1etwistcluster-upgrade-check "
#: What the check does not inherit of the master's environment.
_MASTER_ONLY = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")
#: How much of the check's output is kept (its end).
OUTPUT_LIMIT = 64 * 1024
#: A shell that gives the inherited sockets of systemd (C{LISTEN_FDS}) to
#: the check, whose pid C{LISTEN_PID} must name.
_OWN_LISTEN_PID = ["/bin/sh", "-c", 'LISTEN_PID=$$; export LISTEN_PID; exec "$@"', "sh"]


@frozen
class CheckResult:
    """
    What the check found.

    @ivar reason: Why the new code cannot take over (when not C{ok}).
    @ivar run: How to run the new code (when C{ok}).
    @ivar version: The new twistcluster's version (when C{ok}).
    """

    ok: bool
    reason: str = ""
    run: RunSpec | None = None
    version: str | None = None


def checkRequest(keys: Sequence[str]) -> dict[str, Any]:
    """
    What the check is told of this master: the state's format, and the keys
    of the listening sockets it would carry.
    """
    return {"format": FORMAT, "keys": list(keys), "pid": os.getpid()}


class UpgradeCheck(ProcessProtocol):
    """
    Run the check, and tell its outcome.
    """

    def __init__(
        self,
        reactor: ISpawningReactor,
        launch: Launch,
        request: dict[str, Any],
        timeout: float,
        inherited: Sequence[int] = (),
    ) -> None:
        """
        @param inherited: The sockets systemd passed this master, passed to
            the check under the same numbers.
        """
        self._reactor = reactor
        self._launch = launch
        self._request = request
        self._timeout = timeout
        self._inherited = list(inherited)
        self._output: dict[int, bytes] = {1: b"", 2: b""}
        self._done: Deferred[CheckResult] = Deferred()
        self._timer: IDelayedCall | None = None
        self._timedOut = False

    def run(self) -> Deferred[CheckResult]:
        environ = dict(self._launch.environ)
        environ[CHECK_VARIABLE] = json.dumps(self._request)
        for name in _MASTER_ONLY:
            # The service manager hears from the master alone.
            environ.pop(name, None)
        argv = list(self._launch.argv)
        if self._inherited and "LISTEN_FDS" in environ:
            argv = _OWN_LISTEN_PID + argv
        childFDs: dict[int, Any] = {0: "w", 1: "r", 2: "r", **{fd: fd for fd in self._inherited}}
        try:
            self._reactor.spawnProcess(
                self, argv[0], argv, env=environ, path=self._launch.cwd, childFDs=childFDs
            )
        except OSError as e:
            return succeed(CheckResult(False, f"cannot run {argv[0]}: {e.strerror or e}"))
        self._timer = self._reactor.callLater(self._timeout, self._tooLong)
        return self._done

    def abandon(self) -> None:
        """
        Kill the check (the master is stopping); its outcome is a failure.
        """
        self._tooLong()

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.closeStdin()

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        if childFD in self._output:
            self._output[childFD] = (self._output[childFD] + data)[-OUTPUT_LIMIT:]

    def _tooLong(self) -> None:
        self._timer = None
        self._timedOut = True
        try:
            assert self.transport is not None
            self.transport.signalProcess("KILL")
        except ProcessExitedAlready:
            pass

    def processEnded(self, reason: Failure) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._done.callback(self._outcome(getattr(reason.value, "exitCode", None)))

    def _outcome(self, code: int | None) -> CheckResult:
        if self._timedOut:
            return CheckResult(False, f"the check of the new code did not finish within {self._timeout:g}s")
        answer = None
        # Not splitlines(): it also splits at the mark's record separator.
        for line in self._output[1].decode("utf-8", "replace").split("\n"):
            if line.startswith(ANSWER_MARK):
                answer = line[len(ANSWER_MARK) :]
        if answer is not None:
            try:
                value = json.loads(answer)
            except ValueError:
                value = {"ok": False, "error": "the check's answer is not JSON"}
            if value.get("ok") and code == 0:
                return CheckResult(True, run=RunSpec.fromJSON(value["run"]), version=value.get("version"))
            if not value.get("ok"):
                return CheckResult(False, str(value.get("error")))
        return CheckResult(False, self._lastWord(code))

    def _lastWord(self, code: int | None) -> str:
        lines = [line.strip() for line in self._output[2].decode("utf-8", "replace").splitlines()]
        lines = [line for line in lines if line]
        if lines:
            last = lines[-1]
            prefix = "twist cluster: error: "
            return last[len(prefix) :] if last.startswith(prefix) else last
        return f"the new master exited with code {code} without saying why"


def answerCheck(request: dict[str, Any], listens: Sequence[tuple[str, ListenSpec]], version: str) -> NoReturn:
    """
    End the check, in the new code: the start-up got this far; can this
    master take over the old one's sockets?  The answer is a line on
    standard output, and the process exits at once (nothing is bound,
    nothing is started).
    """
    error = None
    if request.get("format") != FORMAT:
        error = (
            f"the old master hands over its state in format {request.get('format')}; this one reads {FORMAT}"
        )
    else:
        carried = set(request.get("keys", ()))
        indexes: Counter[str] = Counter()
        for description, spec in listens:
            key = spec.key(indexes[spec.key(0)])
            indexes[spec.key(0)] += 1
            if key not in carried:
                error = f"the old master has no socket for {description!r} to hand over"
                break
    answer: dict[str, Any] = {"ok": error is None, "version": version}
    if error is None:
        answer["run"] = thisRunSpec().toJSON()
    else:
        answer["error"] = error
    sys.stdout.write(ANSWER_MARK + json.dumps(answer) + "\n")
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
