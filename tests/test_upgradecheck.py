"""
The upgrade's check: what the old master makes of the check process's
output and exit (its answer, or its last word), and the answer the new
code gives.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from twistcluster._common.endpoints import ListenSpec
from twistcluster._master.carried import CHECK_VARIABLE, FORMAT, Launch, RunSpec
from twistcluster._master.upgradecheck import ANSWER_MARK, CheckResult, UpgradeCheck, checkRequest


class FakeProcess:
    def __init__(self) -> None:
        self.signals: list[Any] = []
        self.stdinClosed = False

    def closeStdin(self) -> None:
        self.stdinClosed = True

    def signalProcess(self, signal: Any) -> None:
        self.signals.append(signal)


class ProcessReactor(Clock):
    """
    A clock that records the processes it is asked to spawn.
    """

    def __init__(self) -> None:
        super().__init__()
        self.spawned: list[dict[str, Any]] = []

    def spawnProcess(self, protocol: Any, executable: str, args: list[str], **options: Any) -> FakeProcess:
        process = FakeProcess()
        self.spawned.append({"executable": executable, "args": args, **options})
        protocol.makeConnection(process)
        return process


LAUNCH = Launch(["/srv/current/bin/twist", "cluster", "app.factory"], "/srv/current", {"PATH": "/bin"})
RUN = RunSpec(
    "/srv/releases/2/bin/python", [], ["/srv/current/bin/twist", "cluster"], "/srv/releases/2", path="x"
)


def check(
    stdout: bytes, stderr: bytes, ended: Failure, inherited: list[int] | None = None
) -> tuple[Any, ...]:
    reactor = ProcessReactor()
    checking = UpgradeCheck(reactor, LAUNCH, {"format": 1}, 60.0, inherited or [])
    results: list[CheckResult] = []
    checking.run().addCallback(results.append)
    spawned = reactor.spawned[0]
    checking.childDataReceived(1, stdout)
    checking.childDataReceived(2, stderr)
    checking.processEnded(ended)
    return results[0], spawned


def test_the_check_runs_the_command_as_typed() -> None:
    result, spawned = check(b"", b"", Failure(ProcessDone(0)))
    assert (spawned["executable"], spawned["args"], spawned["path"]) == (
        "/srv/current/bin/twist",
        LAUNCH.argv,
        "/srv/current",
    )
    assert spawned["env"] == {"PATH": "/bin", CHECK_VARIABLE: json.dumps({"format": 1})}
    assert spawned["childFDs"] == {0: "w", 1: "r", 2: "r"}


def test_systemds_sockets_go_to_the_check() -> None:
    """
    A master started by socket activation: its sockets are the check's too,
    under the same numbers, and LISTEN_PID names the check.
    """
    reactor = ProcessReactor()
    launch = Launch(LAUNCH.argv, LAUNCH.cwd, {"LISTEN_FDS": "1", "LISTEN_PID": "1"})
    UpgradeCheck(reactor, launch, {}, 60.0, [3]).run()
    spawned = reactor.spawned[0]
    assert spawned["args"][:3] == ["/bin/sh", "-c", 'LISTEN_PID=$$; export LISTEN_PID; exec "$@"']
    assert spawned["args"][4:] == LAUNCH.argv
    assert spawned["childFDs"][3] == 3


def test_an_answer_among_other_output() -> None:
    answer = {"ok": True, "version": "2", "run": RUN.toJSON()}
    stdout = b"hello from the factory\n" + (ANSWER_MARK + json.dumps(answer) + "\n").encode()
    result, _ = check(stdout, b"a warning\n", Failure(ProcessDone(0)))
    assert result == CheckResult(True, run=RUN, version="2")


@pytest.mark.parametrize(
    "stdout, stderr, ended, reason",
    [
        (
            (ANSWER_MARK + json.dumps({"ok": False, "error": "the old master has no socket"})).encode(),
            b"",
            Failure(ProcessDone(0)),
            "the old master has no socket",
        ),
        (
            b"",
            b"twist cluster: error: FACTORY: cannot import 'app'\n",
            Failure(ProcessTerminated(64)),
            "FACTORY: cannot import 'app'",
        ),
        (
            b"",
            b"Traceback (most recent call last):\n  File x\nRuntimeError: a bug\n\n",
            Failure(ProcessTerminated(1)),
            "RuntimeError: a bug",
        ),
        (b"", b"", Failure(ProcessDone(0)), "the new master exited with code 0 without saying why"),
    ],
)
def test_a_failed_check_says_why(stdout: bytes, stderr: bytes, ended: Failure, reason: str) -> None:
    result, _ = check(stdout, stderr, ended)
    assert result == CheckResult(False, reason)


def test_a_check_that_takes_too_long_is_killed() -> None:
    reactor = ProcessReactor()
    checking = UpgradeCheck(reactor, LAUNCH, {}, 60.0)
    results: list[CheckResult] = []
    checking.run().addCallback(results.append)
    reactor.advance(60)
    assert checking.transport.signals == ["KILL"]
    checking.processEnded(Failure(ProcessTerminated(None, 9)))
    assert results == [CheckResult(False, "the check of the new code did not finish within 60s")]


def answer(request: dict[str, Any], listens: list[str]) -> dict[str, Any]:
    """
    What the new code's end of the check answers (it exits at once).
    """
    code = (
        "import json, sys\n"
        "from twistcluster._common.endpoints import specFromDescription\n"
        "from twistcluster._master.upgradecheck import answerCheck\n"
        "listens = [(d, specFromDescription(d)) for d in json.loads(sys.argv[2])]\n"
        "answerCheck(json.loads(sys.argv[1]), listens, '9.9')\n"
    )
    ran = subprocess.run(
        [sys.executable, "-c", code, json.dumps(request), json.dumps(listens)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.startswith(ANSWER_MARK)
    return json.loads(ran.stdout[len(ANSWER_MARK) :])


def test_the_new_code_can_take_over() -> None:
    keys = [ListenSpec.forTCP(0).key(0), ListenSpec.forTCP(0).key(1)]
    answered = answer(checkRequest(keys), ["tcp:0:backlog=511", "tcp:0:backlog=511"])
    assert (answered["ok"], answered["version"]) == (True, "9.9")
    assert answered["run"]["executable"] == sys.executable and answered["run"]["code"]


def test_the_new_code_cannot_take_over() -> None:
    missing = answer(checkRequest([ListenSpec.forTCP(0).key(0)]), ["tcp:0", "tcp:0"])
    assert missing == {
        "ok": False,
        "version": "9.9",
        "error": "the old master has no socket for 'tcp:0' to hand over",
    }
    other = answer({"format": FORMAT + 1, "keys": []}, [])
    assert (
        other["error"]
        == f"the old master hands over its state in format {FORMAT + 1}; this one reads {FORMAT}"
    )
