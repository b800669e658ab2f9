# -*- test-case-name: tests.test_pool -*-
"""
The master's worker processes: spawning them over a socketpair, replacing the
ones that die, and stopping them all.
"""

from __future__ import annotations

import os
import socket
import sys
from typing import Any, Callable, Mapping, Sequence

from attrs import field, frozen
from twisted.application.internet import backoffPolicy
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import Factory
from twisted.logger import Logger

from ._handles import Handles
from ._protocol import CONTROL_FD
from ._workers import MasterControl, Worker, WorkerProcessProtocol

WORKER_MODULE = "twistcluster._workermain"


@frozen
class WorkerCommand:
    """
    How to start one worker process.

    @ivar argv: The command line, the executable first.
    @ivar env: Set in the worker's environment, over the master's.
    @ivar cwd: The worker's working directory (the master's if L{None}).
    @ivar uid: Run the worker as this user.
    @ivar gid: Run the worker as this group.
    @ivar relayOutput: Whether the worker's stdout and stderr are pipes whose
        lines the master logs with the worker id; otherwise the worker
        shares the master's.
    """

    argv: Sequence[str]
    env: Mapping[str, str] = field(factory=dict)
    cwd: str | None = None
    uid: int | None = None
    gid: int | None = None
    relayOutput: bool = True


class WorkerPool:
    """
    Keeps C{size} workers running.

    @ivar workers: The live workers, by id.
    @ivar _workerArguments: The worker entry point's command line, after
        C{python -m twistcluster._workermain}.
    @ivar _bootRetryDelay: Seconds to wait before replacing a worker after
        the n-th consecutive one that died before it was ready.
    """

    _log = Logger()

    def __init__(
        self,
        reactor: Any,
        handles: Handles,
        workerArguments: Sequence[str],
        size: int,
        shutdownTimeout: float,
        bootRetryDelay: Callable[[int], float] = backoffPolicy(0.1, 10.0, 2.0),
    ) -> None:
        self._reactor = reactor
        self._handles = handles
        self._workerArguments = list(workerArguments)
        self.size = size
        self._shutdownTimeout = shutdownTimeout
        self._bootRetryDelay = bootRetryDelay
        self._lastId = 0
        self._running = False
        self._bootFailures = 0
        self._replacing: set[IDelayedCall] = set()
        self.workers: dict[int, Worker] = {}

    def start(self) -> None:
        self._running = True
        while len(self.workers) < self.size:
            self.spawn()

    def spawn(self, command: WorkerCommand | None = None) -> Worker:
        """
        Start one worker process, its end of the control channel as fd 3.

        @param command: How; by default C{python -m twistcluster._workermain}
            with this pool's worker arguments.
        """
        if command is None:
            command = self._workerCommand()
        self._lastId += 1
        worker = Worker(self._lastId, self._reactor, self._handles, self, self._shutdownTimeout)
        parentEnd, childEnd = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        output: dict[int, str | int] = {1: "r", 2: "r"} if command.relayOutput else {1: 1, 2: 2}
        try:
            process = self._reactor.spawnProcess(
                WorkerProcessProtocol(worker),
                command.argv[0],
                list(command.argv),
                env=dict(os.environ, **command.env, TWISTCLUSTER_WORKER_ID=str(worker.id)),
                path=command.cwd,
                uid=command.uid,
                gid=command.gid,
                childFDs={0: "w", **output, CONTROL_FD: childEnd.fileno()},
            )
        except BaseException:
            parentEnd.close()
            raise
        finally:
            # spawnProcess leaves our copy open; without this close we would
            # never see the channel end when the worker dies.
            childEnd.close()
        control = MasterControl(worker, self._handles)
        self._reactor.adoptStreamConnection(
            parentEnd.fileno(), socket.AF_UNIX, Factory.forProtocol(lambda: control)
        )
        parentEnd.close()
        worker.attach(process, control)
        process.closeStdin()
        self.workers[worker.id] = worker
        self._log.debug("worker {workerId} spawned (pid {pid})", workerId=worker.id, pid=worker.pid)
        return worker

    def _workerCommand(self) -> WorkerCommand:
        return WorkerCommand(
            [sys.executable, "-m", WORKER_MODULE, *self._workerArguments],
            env={"PYTHONPATH": os.pathsep.join(sys.path), "PYTHONUNBUFFERED": "1"},
        )

    @property
    def readyCount(self) -> int:
        return sum(w.state == "listening" for w in self.workers.values())

    # PoolEvents

    def workerReady(self, worker: Worker) -> None:
        self._bootFailures = 0

    def workerExited(self, worker: Worker, code: int | None, signal: int | None) -> None:
        self.workers.pop(worker.id, None)
        if not self._running or worker.exitedAfterDisconnect:
            return
        delay = 0.0
        if not worker.everReady:
            self._bootFailures += 1
            delay = self._bootRetryDelay(self._bootFailures)
        self._log.info(
            "replacing worker {workerId} in {delay:.1f}s", workerId=worker.id, delay=delay
        )
        call = self._reactor.callLater(delay, self._replace)
        self._replacing.add(call)

    def _replace(self) -> None:
        self._replacing = {c for c in self._replacing if c.active()}
        if self._running and len(self.workers) < self.size:
            self.spawn()

    def stop(self) -> Deferred[Any]:
        """
        Disconnect every worker: each closes its servers, finishes its
        connections and exits, or is killed after the shutdown timeout.

        @return: Fires when every worker has exited.
        """
        self._running = False
        for call in self._replacing:
            if call.active():
                call.cancel()
        self._replacing.clear()
        workers = list(self.workers.values())
        exits = [w.whenExited() for w in workers]
        for worker in workers:
            worker.disconnect()
        return DeferredList(exits)

    def killAll(self) -> None:
        for worker in list(self.workers.values()):
            worker.kill("KILL")
