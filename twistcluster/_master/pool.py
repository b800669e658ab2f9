# -*- test-case-name: tests.test_pool -*-
"""
The master's worker processes: spawning them over a socketpair, replacing the
ones that die or wear out, rolling restarts, scaling, and stopping them all.
"""

from __future__ import annotations

import os
import random
import socket
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from attrs import field, frozen
from twisted.internet.defer import Deferred, DeferredList, DeferredLock, inlineCallbacks
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import Factory
from twisted.internet.task import deferLater
from twisted.logger import Logger

from .._common.protocol import CONTROL_FD, adoptControlChannel
from .handles import Handles
from .output import WorkerProcessProtocol
from .respawn import RespawnPolicy
from .worker import MasterControl, Worker

WORKER_MODULE = "twistcluster._worker.main"


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
    Keeps C{size} workers serving.

    @ivar workers: Every live worker process, by id, draining ones included.
    @ivar _workerArguments: The worker entry point's command line, after
        C{python -m twistcluster._worker.main}.
    @ivar _gaveUp: Called with a one-line reason when workers keep failing to
        boot and none has ever been ready.
    @ivar _maxConnections: Replace a worker after it has taken this many
        connections (plus up to 10% jitter, so workers do not recycle
        together); L{None} for never.
    """

    _log = Logger()

    def __init__(
        self,
        reactor: Any,
        handles: Handles,
        workerArguments: Sequence[str],
        size: int,
        shutdownTimeout: float,
        gaveUp: Callable[[str], object] = lambda reason: None,
        policy: RespawnPolicy | None = None,
        maxConnections: int | None = None,
    ) -> None:
        self._reactor = reactor
        self._handles = handles
        self._workerArguments = list(workerArguments)
        self.size = size
        self._shutdownTimeout = shutdownTimeout
        self._gaveUp = gaveUp
        self.policy = policy if policy is not None else RespawnPolicy(reactor)
        self._maxConnections = maxConnections
        self._lastId = 0
        self._running = False
        self._replenishing: set[IDelayedCall] = set()
        self._replacements = DeferredLock()
        self.workers: dict[int, Worker] = {}

    @property
    def serving(self) -> list[Worker]:
        """
        The workers that count towards C{size}: not leaving.
        """
        return [w for w in self.workers.values() if w.state in ("spawning", "online", "listening")]

    @property
    def readyCount(self) -> int:
        return sum(w.state == "listening" for w in self.workers.values())

    def start(self) -> None:
        self._running = True
        self._replenish()

    def spawn(self, command: WorkerCommand | None = None) -> Worker:
        """
        Start one worker process, its end of the control channel as fd 3.

        @param command: How; by default C{python -m twistcluster._worker.main}
            with this pool's worker arguments.
        """
        if command is None:
            command = self._workerCommand()
        self._lastId += 1
        worker = Worker(self._lastId, self._reactor, self._handles, self, self._shutdownTimeout)
        if self._maxConnections:
            worker.connectionLimit = self._maxConnections + random.randint(0, self._maxConnections // 10)
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
        adoptControlChannel(self._reactor, parentEnd.fileno(), Factory.forProtocol(lambda: control))
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

    def _replenish(self) -> None:
        self._replenishing = {c for c in self._replenishing if c.active()}
        while self._running and len(self.serving) < self.size:
            self.spawn()

    # PoolEvents

    def workerReady(self, worker: Worker) -> None:
        self.policy.workerReady()

    def workerWornOut(self, worker: Worker, why: str) -> None:
        self._log.info(
            "worker {workerId} (pid {pid}) {why}; replacing it", workerId=worker.id, pid=worker.pid, why=why
        )
        self.replace(worker)

    def workerExited(self, worker: Worker, code: int | None, signal: int | None) -> None:
        self.workers.pop(worker.id, None)
        if not self._running or worker.exitedAfterDisconnect:
            return
        delay = self.policy.workerDied(worker.everReady)
        if delay is None:
            self._gaveUp(
                f"workers keep failing to boot ({self.policy.bootFailures} in a row, none ever ready); "
                f"the last one said: {worker.lastError or 'nothing'}"
            )
            return
        self._log.info("replacing worker {workerId} in {delay:.1f}s", workerId=worker.id, delay=delay)
        self._replenishing.add(self._reactor.callLater(delay, self._replenish))

    # Replacing live workers: a new one must be ready before the old one goes.

    def replace(self, worker: Worker) -> Deferred[bool]:
        """
        Start a new worker; once it is ready, take C{worker} out of rotation
        and let it drain.  Replacements run one at a time.

        @return: Fires with whether it was replaced (not if the new workers
            kept failing to boot, or the pool is stopping).
        """
        return self._replacements.run(self._replace, worker)

    @inlineCallbacks
    def _replace(self, worker: Worker) -> Any:
        tries = 0
        while self._running and worker.state in ("spawning", "online", "listening"):
            new = self.spawn()
            if (yield new.whenReady()):
                worker.disconnect()
                return True
            tries += 1
            if tries >= self.policy.maxBootFailures:
                self._log.error(
                    "could not replace worker {workerId}: {tries} new workers failed to boot; "
                    "the last one said: {error}; keeping the old one",
                    workerId=worker.id,
                    tries=tries,
                    error=new.lastError or "nothing",
                )
                return False
            yield deferLater(self._reactor, self.policy.bootRetryDelay(tries), lambda: None)
        return False

    @inlineCallbacks
    def restartAll(self) -> Any:
        """
        A rolling restart: each current worker is replaced by a new one (which
        loads the code afresh), never leaving fewer than C{size} ready.
        """
        old = self.serving
        self._log.info("rolling restart of {count} workers", count=len(old))
        replaced = 0
        for worker in old:
            if not self._running:
                break
            replaced += bool((yield self.replace(worker)))
        self._log.info(
            "rolling restart done: {replaced} of {count} replaced", replaced=replaced, count=len(old)
        )
        return replaced

    def grow(self) -> None:
        self.size += 1
        self._log.info("one worker more: {size}", size=self.size)
        self._replenish()

    def shrink(self) -> None:
        if self.size <= 1:
            self._log.warn("not shrinking below one worker")
            return
        self.size -= 1
        self._log.info("one worker fewer: {size}", size=self.size)
        serving = self.serving
        if len(serving) > self.size:
            # The newest goes: the older ones are warm.
            max(serving, key=lambda w: w.id).disconnect()

    def stop(self) -> Deferred[Any]:
        """
        Disconnect every worker: each closes its servers, finishes its
        connections and exits, or is killed after the shutdown timeout.

        @return: Fires when every worker has exited.
        """
        self._running = False
        for call in self._replenishing:
            if call.active():
                call.cancel()
        self._replenishing.clear()
        workers = list(self.workers.values())
        exits = [w.whenExited() for w in workers]
        for worker in workers:
            worker.disconnect()
        return DeferredList(exits)

    def killAll(self) -> None:
        for worker in list(self.workers.values()):
            worker.kill("KILL")
