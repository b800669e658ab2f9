# -*- test-case-name: tests.test_testing -*-
"""
Test your protocols under a real cluster: a real C{twist cluster} master
and its workers, on a free port, always cleaned up.

With trial (it runs the reactor)::

    from twistcluster.testing import startCluster

    class EchoTests(unittest.TestCase):
        @defer.inlineCallbacks
        def test_echo(self):
            running = yield startCluster(self, "echo.EchoFactory", workers=2)
            ...  # connect to running.address; running.pids are the workers

With pytest, the C{twistcluster} fixture (a pytest plugin, registered when
twistcluster is installed)::

    def test_echo(twistcluster):
        running = twistcluster("echo.EchoFactory", workers=2)
        with socket.create_connection(running.address) as sock: ...

Both stop the cluster at the end of the test, passed or failed: C{SIGTERM}
first (a graceful stop), then C{SIGKILL} for the master and its workers.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar, cast

from attrs import define, field
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.interfaces import IProcessTransport, IReactorProcess, IReactorTime
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import eventAsText, eventFromJSON
from twisted.python.failure import Failure

from ._common.jsonlog import fromFields

__all__ = ["ClusterFailed", "ClusterProcess", "RunningCluster", "startCluster", "twistcluster"]

#: The key that marks the master's log events meant for scripts and tests
#: (C{twist}'s JSON log): C{"bound"} (an endpoint: C{description},
#: C{sockname}, C{scheduling}) and C{"ready"} (a worker: C{workerId},
#: C{pid}).  The README documents them; their wording may change, they do not.
CLUSTER_EVENT = "clusterEvent"

_T = TypeVar("_T")


class ClusterFailed(Exception):
    """
    The cluster did not start (in time); the message ends with its output.
    """


@define
class RunningCluster:
    """
    A cluster started for a test, as its master's log tells it.

    @ivar address: C{(host, port)} to connect to: the first TCP endpoint.
    @ivar pids: The ready workers' process ids, by worker id.
    @ivar masterPid: The master's process id.
    @ivar lines: Everything the master logged so far, as text.
    @ivar events: The events of its JSON log so far.
    """

    masterPid: int
    lines: list[str] = field(factory=list)
    events: list[dict[str, Any]] = field(factory=list)
    address: tuple[str, int] | None = None
    pids: dict[int, int] = field(factory=dict)

    def lineReceived(self, line: str) -> None:
        """
        One line of the master's output: an event of its JSON log, or text.
        """
        if line.startswith("\x1e"):
            try:
                event = eventFromJSON(line[1:])
            except ValueError:
                pass
            else:
                self.eventReceived(event)
                return
        self.lines.append(line)

    def eventReceived(self, event: dict[str, Any]) -> None:
        self.events.append(event)
        self.lines.extend(eventAsText(fromFields(event), includeTimestamp=False).splitlines())
        kind = event.get(CLUSTER_EVENT)
        if kind == "ready":
            self.pids[int(event["workerId"])] = int(event["pid"])
        elif kind == "bound" and self.address is None:
            sockname = event["sockname"]
            if str(event.get("address", "")).startswith("tcp"):
                host = sockname["address"]
                self.address = ("127.0.0.1" if host in ("", "0.0.0.0") else host, int(sockname["port"]))

    def ready(self, workers: int) -> bool:
        return self.address is not None and len(self.pids) >= workers

    @property
    def output(self) -> str:
        return "\n".join(self.lines)


def clusterCommand(factory: str, workers: int, listen: str, arguments: Sequence[str]) -> list[str]:
    """
    The command line: C{python -m twisted} is C{twist}, from the interpreter
    running the tests.
    """
    return [
        sys.executable,
        "-m",
        "twisted",
        "--log-format",
        "json",
        "cluster",
        "--workers",
        str(workers),
        "--listen",
        listen,
        *arguments,
        factory,
    ]


def _environment(env: dict[str, str] | None, cwd: str | None) -> dict[str, str]:
    environment = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
    # FACTORY resolves from the cluster's directory, as `python -m` would.
    where = os.path.abspath(cwd or os.getcwd())
    environment["PYTHONPATH"] = os.pathsep.join(
        [where, *filter(None, environment.get("PYTHONPATH", "").split(os.pathsep))]
    )
    return environment


# trial


class _MasterProtocol(ProcessProtocol):
    def __init__(self, workers: int) -> None:
        self.running: RunningCluster | None = None
        self.started: Deferred[RunningCluster] = Deferred()
        self.ended: Deferred[None] = Deferred()
        self._workers = workers
        self._partial = b""

    def connectionMade(self) -> None:
        self.running = RunningCluster(self.transport.pid)  # type: ignore[union-attr]

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        assert self.running is not None
        *lines, self._partial = (self._partial + data).split(b"\n")
        for line in lines:
            self.running.lineReceived(line.decode("utf-8", "replace"))
        if not self.started.called and self.running.ready(self._workers):
            self.started.callback(self.running)

    def processEnded(self, reason: Failure) -> None:
        if not self.started.called:
            output = self.running.output if self.running else ""
            self.started.errback(ClusterFailed(f"the cluster exited before it was ready:\n{output}"))
        self.ended.callback(None)


def startCluster(
    testCase: Any,
    factory: str,
    workers: int = 2,
    listen: str = "tcp:0:interface=127.0.0.1",
    arguments: Sequence[str] = (),
    cwd: str | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 30.0,
    reactor: IReactorProcess | None = None,
) -> Deferred[RunningCluster]:
    """
    Start C{twist cluster} for a trial test: it is stopped in the test's
    cleanup, whatever happens.

    @param testCase: The L{twisted.trial.unittest.TestCase} (for C{addCleanup}).
    @param factory: The C{FACTORY}, a dotted name.
    @param listen: The endpoint; by default a free port on 127.0.0.1.
    @param arguments: More C{twist cluster} options (C{--shutdown-timeout},
        ...).
    @param cwd: The cluster's directory (C{FACTORY} resolves from there).
    @return: Fires with the L{RunningCluster} once C{workers} are ready;
        fails with L{ClusterFailed} if it exits or C{timeout} passes first.
    """
    if reactor is None:
        from twisted.internet import reactor as installed

        reactor = cast(IReactorProcess, installed)
    # A reactor that spawns processes is a clock too.
    clock = cast(IReactorTime, reactor)
    protocol = _MasterProtocol(workers)
    reactor.spawnProcess(
        protocol,
        sys.executable,
        clusterCommand(factory, workers, listen, arguments),
        env=_environment(env, cwd),
        path=cwd,
    )
    testCase.addCleanup(_stop, protocol, clock, timeout)

    def timedOut(result: Any, timeout: float) -> Any:
        output = protocol.running.output if protocol.running else ""
        raise ClusterFailed(f"the cluster was not ready after {timeout}s:\n{output}")

    return protocol.started.addTimeout(timeout, clock, onTimeoutCancel=timedOut)


def _stop(protocol: _MasterProtocol, clock: IReactorTime, timeout: float) -> Deferred[None]:
    if protocol.ended.called:
        return succeed(None)
    transport = protocol.transport
    transport.signalProcess("TERM")  # type: ignore[union-attr]
    # Its workers follow a killed master: their control channel closes.
    killer = clock.callLater(timeout, _kill, transport)

    def ended(result: None) -> None:
        if killer.active():
            killer.cancel()

    return protocol.ended.addCallback(ended)


def _kill(transport: IProcessTransport) -> None:
    try:
        transport.signalProcess("KILL")
    except ProcessExitedAlready:
        pass


# pytest


class ClusterProcess:
    """
    C{twist cluster} started for a synchronous test (pytest), in a process
    group of its own: its output is read in a thread as it comes, and
    L{waitReady} blocks with a deadline.
    """

    def __init__(
        self,
        factory: str,
        workers: int = 2,
        listen: str = "tcp:0:interface=127.0.0.1",
        arguments: Sequence[str] = (),
        cwd: str | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self._workers = workers
        self._start(clusterCommand(factory, workers, listen, arguments), _environment(env, cwd), cwd)

    @classmethod
    def _fromCommand(
        cls, command: Sequence[str], env: dict[str, str], cwd: str | None = None, passFDs: Sequence[int] = ()
    ) -> ClusterProcess:
        """
        A cluster that C{command} runs (twistcluster's own tests: a primary
        script, or a launcher in front of C{twist}).
        """
        self = cls.__new__(cls)
        self._workers = 0
        self._start(command, env, cwd, passFDs)
        return self

    def _start(
        self, command: Sequence[str], env: dict[str, str], cwd: str | None, passFDs: Sequence[int] = ()
    ) -> None:
        self.process = subprocess.Popen(
            list(command),
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            pass_fds=tuple(passFDs),
        )
        self.running = RunningCluster(self.process.pid)
        self._ended = False
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            with self._changed:
                self.running.lineReceived(raw.decode("utf-8", "replace").rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._ended = True
            self._changed.notify_all()

    def waitUntil(self, found: Callable[[RunningCluster], _T | None], timeout: float, what: str) -> _T:
        """
        Wait until C{found(running)} returns something (called each time the
        master logs, under the lock), and return it.

        @raise ClusterFailed: The master's output ended, or C{timeout}
            passed, first.
        """
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                result = found(self.running)
                if result is not None and result is not False:
                    return result
                if self._ended:
                    raise ClusterFailed(f"the cluster exited before {what}:\n{self.running.output}")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise ClusterFailed(
                        f"timed out after {timeout}s waiting for {what}:\n{self.running.output}"
                    )
                self._changed.wait(remaining)

    def waitReady(self, timeout: float = 30.0) -> RunningCluster:
        """
        @raise ClusterFailed: The cluster exited, or was not ready in time.
        """
        workers = self._workers
        return self.waitUntil(
            lambda running: running if running.ready(workers) else None, timeout, f"{workers} ready workers"
        )

    def stop(self, timeout: float = 30.0) -> int:
        """
        Stop the cluster gracefully, or kill it and its workers after
        C{timeout}; whatever is left of its process group then is killed.

        @return: The master's exit status.
        """
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        self.kill()
        return self.process.returncode

    def kill(self) -> None:
        """
        Kill the master's whole process group (its workers included) at
        once, and reap the master.
        """
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.process.wait()
        self._reader.join(10)
        if self.process.stdout is not None:
            self.process.stdout.close()


try:
    import pytest
except ImportError:  # pragma: no cover (trial users need no pytest)
    pytest = None  # type: ignore[assignment]

if pytest is not None:

    @pytest.fixture
    def twistcluster() -> Iterator[Any]:
        """
        Start clusters: C{twistcluster(factory, workers=2, listen=..., arguments=(),
        cwd=None, env=None, timeout=30.0)} returns a ready L{RunningCluster};
        each is stopped after the test, passed or failed.
        """
        started: list[ClusterProcess] = []

        def start(factory: str, timeout: float = 30.0, **options: Any) -> RunningCluster:
            cluster = ClusterProcess(factory, **options)
            started.append(cluster)
            return cluster.waitReady(timeout)

        try:
            yield start
        finally:
            for cluster in started:
                cluster.stop()
