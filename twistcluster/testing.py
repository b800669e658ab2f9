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
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

from attrs import define, field
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure

__all__ = ["ClusterFailed", "ClusterProcess", "RunningCluster", "startCluster", "twistcluster"]

_ADDRESS = re.compile(r"listening on \S+ at tcp6?:\[?([^\]\s]*)\]?:(\d+)")
_READY = re.compile(r"worker (\d+) \(pid (\d+)\) ready")


class ClusterFailed(Exception):
    """
    The cluster did not start (in time); the message ends with its output.
    """


@define
class RunningCluster:
    """
    A cluster started for a test.

    @ivar address: C{(host, port)} to connect to.
    @ivar pids: The ready workers' process ids, by worker id.
    @ivar masterPid: The master's process id.
    @ivar lines: Everything the master logged so far.
    """

    masterPid: int
    lines: list[str] = field(factory=list)
    address: tuple[str, int] | None = None
    pids: dict[int, int] = field(factory=dict)

    def lineReceived(self, line: str) -> None:
        self.lines.append(line)
        found = _ADDRESS.search(line)
        if found and self.address is None:
            host = found.group(1)
            self.address = ("127.0.0.1" if host in ("", "0.0.0.0") else host, int(found.group(2)))
        found = _READY.search(line)
        if found:
            self.pids[int(found.group(1))] = int(found.group(2))

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
        "text",
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
    reactor: Any = None,
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
        from twisted.internet import reactor
    protocol = _MasterProtocol(workers)
    reactor.spawnProcess(
        protocol,
        sys.executable,
        clusterCommand(factory, workers, listen, arguments),
        env=_environment(env, cwd),
        path=cwd,
    )
    testCase.addCleanup(_stop, protocol, reactor, timeout)

    def timedOut(result: Any, timeout: float) -> Any:
        output = protocol.running.output if protocol.running else ""
        raise ClusterFailed(f"the cluster was not ready after {timeout}s:\n{output}")

    return protocol.started.addTimeout(timeout, reactor, onTimeoutCancel=timedOut)


def _stop(protocol: _MasterProtocol, reactor: Any, timeout: float) -> Deferred[None]:
    if protocol.ended.called:
        return succeed(None)
    transport = protocol.transport
    transport.signalProcess("TERM")  # type: ignore[union-attr]
    # Its workers follow a killed master: their control channel closes.
    killer = reactor.callLater(timeout, _kill, transport)

    def ended(result: None) -> None:
        if killer.active():
            killer.cancel()

    return protocol.ended.addCallback(ended)


def _kill(transport: Any) -> None:
    try:
        transport.signalProcess("KILL")
    except ProcessExitedAlready:
        pass


# pytest


class ClusterProcess:
    """
    C{twist cluster} started for a synchronous test (pytest): its output is
    read in a thread, and L{waitReady} blocks with a deadline.
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
        self.process = subprocess.Popen(
            clusterCommand(factory, workers, listen, arguments),
            cwd=cwd,
            env=_environment(env, cwd),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.running = RunningCluster(self.process.pid)
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
            self._changed.notify_all()

    def waitReady(self, timeout: float = 30.0) -> RunningCluster:
        """
        @raise ClusterFailed: The cluster exited, or was not ready in time.
        """
        deadline = time.monotonic() + timeout
        with self._changed:
            while not self.running.ready(self._workers):
                if self.process.poll() is not None and not self._reader.is_alive():
                    raise ClusterFailed(f"the cluster exited before it was ready:\n{self.running.output}")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise ClusterFailed(f"the cluster was not ready after {timeout}s:\n{self.running.output}")
                self._changed.wait(min(remaining, 0.5))
        return self.running

    def stop(self, timeout: float = 30.0) -> int:
        """
        Stop the cluster gracefully, or kill it and its workers after
        C{timeout}.

        @return: The master's exit status.
        """
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self._reader.join(timeout)
        if self.process.stdout is not None:
            self.process.stdout.close()
        return self.process.returncode


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
