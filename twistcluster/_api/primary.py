# -*- test-case-name: tests.test_cluster_api, tests.test_node_api, tests.test_node_listen -*-
"""
C{cluster} in the primary, as Node's C{cluster} module is there: C{fork()},
C{workers}, C{settings}/C{setupPrimary()}, C{schedulingPolicy},
C{disconnect()}, and the cluster's events.

It runs on the same engine as C{twist cluster}'s master (L{Spawner},
L{Worker}, L{Handles}), without its supervisor, and with Node's rules where
the command line has its own: workers are started only by C{fork()} and never replaced (C{'exit'} is
where an application forks again), any listen a worker asks for is granted,
and a listening socket closes once no worker is left.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.task import deferLater
from twisted.logger import Logger

from .._common.events import EventEmitter, Latch
from .._common.policies import SCHED_LEAST_CONN, SCHED_NONE, SCHED_REUSEPORT, SCHED_RR
from .._common.reactors import IMasterReactor, narrowed
from .._master.handles import Handles
from .._master.shutdown import shutDown
from .._master.spawner import Spawner
from . import workerface
from .settings import (
    BadSetting,
    defaultSettings,
    mergeSettings,
    policyFromEnvironment,
    schedulingFor,
    workerCommand,
)


class PrimaryCluster(EventEmitter):
    """
    Node's C{cluster} in the primary.

    Events: C{'fork'} (worker), C{'online'} (worker), C{'listening'}
    (worker, address), C{'disconnect'} (worker), C{'exit'} (worker, code,
    signal), C{'message'} (worker, message), C{'setup'} (settings).

    @ivar workers: The live workers, by id; a worker leaves once it has
        exited.
    """

    _log = Logger()
    isPrimary = True
    isMaster = True
    isWorker = False
    worker = None
    Worker = workerface.Worker
    SCHED_NONE = SCHED_NONE
    SCHED_RR = SCHED_RR
    SCHED_LEAST_CONN = SCHED_LEAST_CONN
    SCHED_REUSEPORT = SCHED_REUSEPORT

    def __init__(
        self,
        reactor: IMasterReactor | None = None,
        environ: Mapping[str, str] | None = None,
        argv: Sequence[str] | None = None,
    ) -> None:
        self._givenReactor = reactor
        self._environ = os.environ if environ is None else environ
        self._argv = list(sys.argv if argv is None else argv)
        self._settings: dict[str, Any] | None = None
        self._policy: int | None = None
        self._policyFrozen = False
        self.workers: dict[int, workerface.Worker] = {}
        self._handles: Handles | None = None
        self._spawner: Spawner | None = None
        self._forkAnnounced: set[int] = set()
        self._disconnecting: Latch[None] | None = None
        self._shutdownTrigger: Any = None

    @property
    def _reactor(self) -> IMasterReactor:
        if self._givenReactor is None:
            from twisted.internet import reactor

            self._givenReactor = narrowed(reactor, IMasterReactor)
        return self._givenReactor

    # Settings

    @property
    def settings(self) -> Mapping[str, Any]:
        """
        The settings in force (read-only; change them with L{setupPrimary}):
        empty until the first C{setupPrimary()} or C{fork()}.
        """
        return MappingProxyType(dict(self._settings or {}))

    @property
    def schedulingPolicy(self) -> int:
        """
        L{SCHED_RR} or L{SCHED_NONE} (Node's), or L{SCHED_LEAST_CONN} or
        L{SCHED_REUSEPORT}; C{$TWISTCLUSTER_SCHED_POLICY} by default.
        Frozen by the first C{setupPrimary()} or C{fork()}.
        """
        if self._policy is None:
            self._policy = policyFromEnvironment(self._environ)
        return self._policy

    @schedulingPolicy.setter
    def schedulingPolicy(self, policy: int) -> None:
        schedulingFor(policy)
        if self._policyFrozen and policy != self._policy:
            raise BadSetting("schedulingPolicy is frozen once setupPrimary() or fork() was called")
        self._policy = policy

    def setupPrimary(self, settings: Mapping[str, Any] | None = None, **more: Any) -> None:
        """
        Change the settings of the workers forked from now on, over the
        current ones: C{exec} (the script; C{sys.argv[0]}), C{args}
        (C{sys.argv[1:]}), C{execArgv} (the interpreter's options), C{cwd},
        C{env}, C{uid}, C{gid}, C{silent} (relay the workers' output to the
        log instead of sharing stdout and stderr), C{shutdownTimeout}
        (seconds a disconnecting worker has before it is killed),
        C{maxMessageSize} (the longest message, in bytes of JSON, a worker
        may send the primary; L{None}: no bound; default
        L{DEFAULT_MAX_MESSAGE_SIZE}, 16 MiB).  Emits C{'setup'}.

        @raise BadSetting: An unknown setting or a bad value.
        """
        current = self._settings if self._settings is not None else defaultSettings(self._argv)
        self._settings = mergeSettings(current, {**(settings or {}), **more})
        if not self._policyFrozen:
            self.schedulingPolicy  # noqa: B018 (read: resolves the default)
            self._policyFrozen = True
        self._reactor.callLater(0, self.emit, "setup", self.settings)

    setupMaster = setupPrimary

    # Workers

    def fork(self, env: Mapping[str, Any] | None = None) -> workerface.Worker:
        """
        Start a worker running the script in C{settings['exec']}, with
        C{env} over the primary's environment.

        @raise BadSetting: The settings cannot start a worker.
        """
        self.setupPrimary()
        assert self._settings is not None
        command = workerCommand(self._settings, env)
        spawner = self._engine()
        spawner.maxMessageSize = self._settings["maxMessageSize"]
        worker = workerface.Worker(spawner.spawn(command))
        self.workers[worker.id] = worker
        worker.relayEventsTo(self._workerEvent)
        self._reactor.callLater(0, self._announceFork, worker)
        return worker

    def _engine(self) -> Spawner:
        if self._spawner is None:
            assert self._settings is not None
            self._handles = Handles(self._reactor, None, schedulingFor(self.schedulingPolicy))
            self._spawner = Spawner(self._reactor, self._handles, self._settings["shutdownTimeout"])
            self._shutdownTrigger = self._reactor.addSystemEventTrigger("before", "shutdown", self._shutdown)
        return self._spawner

    def _announceFork(self, worker: workerface.Worker) -> None:
        if worker.id not in self._forkAnnounced:
            self._forkAnnounced.add(worker.id)
            self.emit("fork", worker)

    def _workerEvent(self, name: str, worker: workerface.Worker, *args: Any) -> None:
        # 'fork' comes first even if the worker was quicker than a tick.
        self._announceFork(worker)
        if name != "exit":
            self.emit(name, worker, *args)
            return
        self.workers.pop(worker.id, None)
        self._forkAnnounced.discard(worker.id)
        self.emit("exit", worker, *args)
        self._whenNoWorkers()

    def broadcast(self, message: Any) -> int:
        """
        Send C{message} to every connected worker.

        @return: How many workers it was sent to.
        @raise TypeError: C{message} is not JSON-serialisable.
        """
        return workerface.broadcast(self.workers.values(), message)

    def disconnect(self, callback: Callable[[], object] | None = None) -> Deferred[None]:
        """
        Disconnect every worker (each closes its servers, finishes its
        connections, and exits), as the command line's master stops: the
        listening sockets stop accepting first, and the connections already
        accepted reach a worker before the workers leave.

        @param callback: Called once every worker is gone and every listening
            socket closed.
        @return: Fires at the same time.
        """
        if self._disconnecting is None:
            self._disconnecting = Latch()
            self._shutDown().addBoth(self._disconnected)
        done = self._disconnecting.wait()
        if callback is not None:
            done.addCallback(lambda _: callback())
        return done

    @inlineCallbacks
    def _shutDown(self) -> Any:
        hadWorkers = bool(self.workers)
        if self._spawner is not None and self._handles is not None:
            assert self._settings is not None
            spawner = self._spawner
            yield shutDown(
                self._handles, lambda: spawner.live.values(), self._reactor, self._settings["shutdownTimeout"]
            )
        if not hadWorkers:
            # As Node, which calls back on the next tick.
            yield deferLater(self._reactor, 0, lambda: None)

    def _disconnected(self, result: object) -> None:
        latch, self._disconnecting = self._disconnecting, None
        assert latch is not None
        latch.fire(None)

    def _whenNoWorkers(self) -> None:
        """
        With no worker left, close every listening socket (as Node does, so
        that a later worker binds again).
        """
        if self.workers or self._disconnecting is not None or self._handles is None:
            return
        shutDown(self._handles, lambda: (), self._reactor, 0)

    def _shutdown(self) -> Deferred[None] | None:
        # The reactor is stopping: let the workers finish and exit first.
        return self.disconnect() if self.workers else None

    def _forget(self) -> None:
        """
        Stop watching for the reactor's shutdown (tests make many primaries).
        """
        if self._shutdownTrigger is not None:
            self._reactor.removeSystemEventTrigger(self._shutdownTrigger)
            self._shutdownTrigger = None
