# -*- test-case-name: tests.test_cluster,tests.test_node_api -*-
"""
Starting worker processes: a socketpair whose other end the child gets as
fd 3, C{spawnProcess(childFDs=...)}, and the master's end of the control
channel.  Both faces use it: C{twist cluster}'s master through its
L{twistcluster._master.supervisor.Supervisor}, and the Node API's primary
through C{fork()}.  It decides nothing: when to start a worker, and what to
do once it exits, is its caller's business.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Mapping, Sequence

from attrs import field, frozen
from twisted.internet.protocol import Factory
from twisted.logger import Logger

from .._common.environment import WORKER_ID_VARIABLE, WORKER_SLOT_VARIABLE
from .._common.protocol import CONTROL_FD, adoptControlChannel
from .._common.reactors import ISpawningReactor
from .control import COMMAND_LINE_MAX_MESSAGE, MasterControl
from .handles import Handles
from .output import WorkerProcessProtocol
from .signals import heldForChild
from .worker import Worker

#: The worker entry point of C{twist cluster}.
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
    @ivar passFDs: Descriptors the worker inherits besides its standard
        streams and control channel (its number: the master's), e.g. TLS
        files the master read before dropping privileges.
    """

    argv: Sequence[str]
    env: Mapping[str, str] = field(factory=dict)
    cwd: str | None = None
    uid: int | None = None
    gid: int | None = None
    relayOutput: bool = True
    passFDs: Mapping[int, int] = field(factory=dict)


def entryPointCommand(
    workerArguments: Sequence[str], passFDs: Mapping[int, int] | None = None
) -> WorkerCommand:
    """
    C{python -m twistcluster._worker.main WORKERARGUMENTS}, with this
    process's import path: how C{twist cluster} starts its workers.
    """
    return WorkerCommand(
        [sys.executable, "-m", WORKER_MODULE, *workerArguments],
        env={"PYTHONPATH": os.pathsep.join(sys.path), "PYTHONUNBUFFERED": "1"},
        passFDs=dict(passFDs or {}),
    )


class Spawner:
    """
    Starts worker processes, each with its own control channel, numbering
    them from 1 (ids are never reused).

    @ivar live: The workers it started that have not exited yet, by id.
    @ivar _reactor: Spawns the processes, adopts the channels, and times the
        workers' deadlines (C{IReactorProcess}, C{IReactorSocket},
        C{IReactorTime}).
    @ivar _handles: The listening handles the workers' queries reach.
    @ivar _shutdownTimeout: Seconds a leaving worker has before it is killed.
    @ivar maxMessageSize: The longest user message a worker may send the
        master, in bytes (L{None}: no bound).
    """

    maxMessageSize: int | None = COMMAND_LINE_MAX_MESSAGE

    _log = Logger()

    def __init__(self, reactor: ISpawningReactor, handles: Handles, shutdownTimeout: float) -> None:
        self._reactor = reactor
        self._handles = handles
        self._shutdownTimeout = shutdownTimeout
        #: The last worker id given out (ids are never reused, upgrades
        #: included).
        self.lastId = 0
        self.live: dict[int, Worker] = {}

    def spawn(self, command: WorkerCommand, slot: int | None = None, generation: int = 0) -> Worker:
        """
        Start one worker process, its end of the control channel as fd 3.

        @param slot: Its slot (C{$TWISTCLUSTER_WORKER_SLOT}), if it has one.
        @param generation: How many rolling restarts came before it.
        @raise OSError: The process could not be started (C{EMFILE}, ...);
            nothing is left open.
        """
        # The id is taken once the process runs: a failed attempt leaves none unused.
        worker = Worker(self.lastId + 1, self._reactor, self._handles, self._shutdownTimeout)
        worker.slot, worker.generation = slot, generation
        env = dict(os.environ, **command.env)
        env[WORKER_ID_VARIABLE] = str(worker.id)
        if slot is not None:
            env[WORKER_SLOT_VARIABLE] = str(slot)
        output: dict[int, str | int] = {1: "r", 2: "r"} if command.relayOutput else {1: 1, 2: 2}
        parentEnd, childEnd = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            with heldForChild():
                process = self._reactor.spawnProcess(
                    WorkerProcessProtocol(worker),
                    command.argv[0],
                    list(command.argv),
                    env=env,
                    path=command.cwd,
                    uid=command.uid,
                    gid=command.gid,
                    childFDs={0: "w", **output, CONTROL_FD: childEnd.fileno(), **command.passFDs},
                )
        except BaseException:
            parentEnd.close()
            raise
        finally:
            # spawnProcess leaves our copy open; without this close we would
            # never see the channel end when the worker dies.
            childEnd.close()
        self.lastId = worker.id
        control = MasterControl(worker, self._handles, self._reactor, self.maxMessageSize)
        adoptControlChannel(self._reactor, parentEnd.fileno(), Factory.forProtocol(lambda: control))
        parentEnd.close()
        worker.attach(process, control)
        process.closeStdin()
        self.live[worker.id] = worker
        worker.whenExited().addCallback(lambda status: self.live.pop(worker.id, None))
        self._log.debug("worker {workerId} spawned (pid {pid})", workerId=worker.id, pid=worker.pid)
        return worker
