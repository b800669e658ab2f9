# -*- test-case-name: tests.test_handoff, tests.test_cluster -*-
"""
A worker's runtime (the process's entry point is L{twistcluster._worker.main};
an application's script runs it through L{twistcluster.cluster}).

It adopts its end of the control channel (fd 3, whose AMP responders are
L{twistcluster._worker.control}'s), tells the master it is online, listens
through the master on every endpoint it was given, and serves the
connections the master hands it.  It exits when the master tells it to
(after finishing its open connections) or when the control channel closes
(a master killed with SIGKILL leaves no orphans).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, Protocol

from twisted.internet.defer import Deferred, FirstError, fail, gatherResults, succeed
from twisted.internet.protocol import ServerFactory
from twisted.logger import Logger
from twisted.protocols import amp
from twisted.python.failure import Failure

from .._common.descriptors import raiseOpenFilesLimit
from .._common.endpoints import ListenSpec, isDatagram
from .._common.events import Latch
from .._common.factory import loadDatagramProtocols, loadFactory
from .._common.protocol import (
    CHANNEL_LOST_GRACE,
    CONTROL_FD,
    Close,
    ExitedAfterDisconnect,
    Listening,
    ListenRefused,
    Online,
    QueryServer,
    adoptWorkerChannel,
)
from .._common.reactors import IWorkerReactor
from .control import WorkerControl
from .intake import HandOffIntake
from .listening import ClusterPort, ClusterReactor, listenOn
from .routing import CommandLineListens, specsOf
from .startup import Startup
from .tracking import ClosedConnectionReports, OpenConnections

#: A worker's exit status when it could not start serving.
BOOT_FAILED = 3


class RuntimeListener(Protocol):
    """
    What the worker's C{cluster.worker} hears from the runtime.
    """

    def messageReceived(self, value: Any) -> None: ...

    def disconnected(self) -> None: ...


class WorkerRuntime:
    """
    One worker's life: online, listening through the master, serving, and
    draining on the way out.

    @ivar ports: The worker's granted listens, by the master's handle key.
    @ivar clusterReactor: The reactor whose listens go through the master.
    @ivar listener: Told of user messages and of the channel's end.
    @ivar openConnections: The connections it serves, which a graceful stop
        waits for.
    @ivar _failOnRefusal: Whether a refused listen ends the worker (the
        command line's workers; an application handles its own).
    """

    _log = Logger()

    def __init__(
        self,
        reactor: IWorkerReactor,
        workerId: int,
        factoryName: str | None = None,
        descriptions: Sequence[str] = (),
        shutdownTimeout: float = 30.0,
        controlFD: int = CONTROL_FD,
        failOnRefusal: bool = True,
    ) -> None:
        self._reactor = reactor
        self._controlFD = controlFD
        self.workerId = workerId
        self._factoryName = factoryName
        self._descriptions = list(descriptions)
        self._shutdownTimeout = shutdownTimeout
        self._failOnRefusal = failOnRefusal
        self._control: WorkerControl | None = None
        self._connected = False
        self._disconnecting = False
        self._drainedAll = False
        self.ports: dict[str, ClusterPort] = {}
        self.clusterReactor = ClusterReactor(reactor, self)
        self.listener: RuntimeListener | None = None
        self.openConnections = OpenConnections(ClosedConnectionReports(reactor, self._send))
        self.intake = HandOffIntake(reactor, workerId, self.ports, self.openConnections.reports.closed)
        self._done: Latch[None] = Latch()
        # The command line's workers are ready once their start is over (an
        # application's worker hears of each listen, as in Node).
        self._startup: Startup[ClusterPort] | None = (
            Startup(self._announceListening, self.couldNotStart) if failOnRefusal else None
        )
        self._ending = False

    @property
    def connected(self) -> bool:
        return self._connected

    def connect(self) -> None:
        """
        Adopt the control channel and tell the master this worker is online.
        """
        if self._control is not None:
            return
        before, limit = raiseOpenFilesLimit()
        self._log.info(
            "worker {workerId}: open files limit {limit}{raised}",
            workerId=self.workerId,
            limit=limit,
            raised=f" (raised from {before})" if limit != before else "",
        )
        control = self._control = WorkerControl(self)
        # IReactorSocket types the factory as the unparameterised ServerFactory.
        factory: ServerFactory = ServerFactory()
        factory.protocol = lambda: control
        adoptWorkerChannel(self._reactor, self._controlFD, factory)
        os.close(self._controlFD)
        self._connected = True
        # Its channel closes as its reactor stops: not the master going away.
        self._reactor.addSystemEventTrigger("before", "shutdown", self._endingNow)
        self._send(Online, workerId=self.workerId, pid=os.getpid())

    def routeListens(self) -> None:
        """Make the real reactor's own listens go through the master."""
        self.clusterReactor.install()

    def shareOnly(self, configured: Sequence[str] | None) -> CommandLineListens:
        """
        Send only the listens the master was configured for through it (a
        command-line worker); the others are made in this worker.

        @param configured: The endpoint descriptions the master listens on;
            L{None} if it cannot tell (see L{CommandLineListens}).
        """
        listens = CommandLineListens(None if configured is None else specsOf(configured))
        self.clusterReactor.listens = listens
        return listens

    def run(self) -> Deferred[None]:
        """
        Start the worker: serve the factory on the endpoints it was given.

        @return: Fires when the worker should exit; fails if it could not
            start serving.
        """
        self.connect()
        try:
            self._listenAll()
        except Exception:
            self.couldNotStart(Failure())
        return self.whenDone()

    def whenDone(self) -> Deferred[None]:
        """
        Fires when the worker should exit: it left, and finished its
        connections; fails if it could not serve.
        """
        return self._done.wait()

    def _listenAll(self) -> None:
        listening = [
            listenOn(self.clusterReactor, description, serving).addCallback(self._startedListening)
            for description, serving in zip(self._descriptions, self._loadServing())
        ]
        gatherResults(listening, consumeErrors=True).addCallbacks(self._ready, self.couldNotStart)

    def _loadServing(self) -> list[Any]:
        """
        What serves each listen: the user's factory, or for udp: endpoints
        a datagram protocol each.
        """
        assert self._factoryName is not None
        if self._descriptions and all(map(isDatagram, self._descriptions)):
            return list(loadDatagramProtocols(self._factoryName, len(self._descriptions)))
        return [loadFactory(self._factoryName)] * len(self._descriptions)

    def _startedListening(self, port: ClusterPort) -> Deferred[ClusterPort]:
        return port.whenListening()

    def startedPlugin(self) -> None:
        """
        The plugin's C{startService} returned: the worker is ready once every
        listen it made is listening.
        """
        if self._startup is not None:
            self._startup.finish(self.clusterReactor.ports)

    def _ready(self, ports: list[ClusterPort]) -> None:
        if self._startup is not None:
            self._startup.finish(ports)
        self._log.info(
            "worker {workerId} serving {factory} on {addresses} ({reactor})",
            workerId=self.workerId,
            factory=self._factoryName,
            addresses=", ".join(p.address() for p in ports),
            reactor=type(self._reactor).__name__,
        )

    def couldNotStart(self, reason: Failure) -> None:
        """
        The worker cannot serve: log why, and end it with L{BOOT_FAILED}.
        """
        if isinstance(reason.value, FirstError):
            reason = reason.value.subFailure
        self._log.failure(
            "worker {workerId} could not start: {error}",
            reason,
            workerId=self.workerId,
            error=f"{reason.type.__name__ if reason.type else 'error'}: {reason.getErrorMessage()}",
        )
        # Exit non-zero without task.react logging it a second time.
        self._ending = True
        self._done.fail(lambda: SystemExit(BOOT_FAILED))

    def _endingNow(self) -> None:
        self._ending = True

    # MasterChannel, for the worker's cluster ports

    def queryServer(self, spec: ListenSpec, index: int) -> Deferred[dict[str, Any]]:
        if self._control is None or not self._connected or self._disconnecting:
            return fail(ListenRefused(f"worker {self.workerId} is disconnecting or not connected"))
        answer: Deferred[dict[str, Any]] = self._control.callRemote(
            QueryServer, spec=spec.toJSON(), index=index
        )
        return answer

    def portListening(self, port: ClusterPort) -> None:
        assert port.key is not None
        self.ports[port.key] = port
        if self._startup is None or not self._startup.granted(port):
            self._announceListening(port)

    def _announceListening(self, port: ClusterPort) -> None:
        self._send(Listening, key=port.key, address=port.sockname)

    def portClosed(self, port: ClusterPort) -> None:
        assert port.key is not None
        if self.ports.get(port.key) is port:
            del self.ports[port.key]
        self._send(Close, key=port.key)

    def portRefused(self, port: ClusterPort, reason: Failure) -> None:
        if self._startup is not None and self._startup.refused(reason):
            # The failed start says so, once every listen was asked for.
            return
        self._log.warn(
            "worker {workerId} could not listen: {error}",
            workerId=self.workerId,
            error=reason.getErrorMessage(),
        )
        if self._failOnRefusal and self._factoryName is None:
            self.couldNotStart(reason)

    def connectionGone(self, port: ClusterPort) -> None:
        self.intake.clientGone(port)

    def connectionOpened(self, port: ClusterPort, protocol: Any) -> None:
        self.openConnections.opened(port, protocol)

    def _send(self, command: type[amp.Command], **arguments: Any) -> None:
        if self._connected and self._control is not None:
            self._control.callRemote(command, **arguments)

    # Messages

    def sendMessage(self, chunks: list[bytes]) -> Deferred[None] | None:
        """
        Send a user message (already encoded) to the master.

        @return: Fires once the master has it; L{None} if not connected.
        """
        if not self._connected or self._control is None:
            return None
        return self._control.sendChunks(chunks)

    def messageReceived(self, value: Any) -> None:
        if self.listener is not None:
            self.listener.messageReceived(value)

    # Leaving

    def disconnect(self) -> None:
        """
        The master asked (or SIGTERM, or the master is gone): close every
        server, let open connections finish (up to the shutdown timeout),
        close the channel, then exit.
        """
        self._leave(tellMaster=False)

    def leave(self) -> None:
        """
        As L{disconnect}, of the worker's own will: the master hears so
        before the channel closes (C{cluster.worker.disconnect()}).
        """
        self._leave(tellMaster=True)

    def sayExitedAfterDisconnect(self) -> Deferred[None]:
        """
        @return: Fires once the master knows this worker leaves of its own
            will (or cannot be told).
        """
        if not self._connected or self._control is None:
            return succeed(None)
        d: Deferred[dict[str, Any]] = self._control.callRemote(ExitedAfterDisconnect)
        return d.addCallbacks(lambda answer: None, lambda reason: None)

    def _leave(self, tellMaster: bool, timeout: float | None = None) -> None:
        if self._disconnecting:
            return
        self._disconnecting = True
        # A port on a socket the worker adopted closes on the next turn.
        closed = gatherResults([port.stopListening() for port in self.clusterReactor.ports])
        self._log.info(
            "worker {workerId} closing; {count} connections open",
            workerId=self.workerId,
            count=len(self.openConnections),
        )
        drained = self.openConnections.whenAllClosed()
        drained.addTimeout(
            self._shutdownTimeout if timeout is None else timeout, self._reactor, lambda *a: None
        )
        drained.addBoth(lambda _: closed).addBoth(lambda _: self._finishedConnections(tellMaster))

    def _finishedConnections(self, tellMaster: bool) -> None:
        self._drainedAll = True
        self.openConnections.reports.flush()
        self.intake.sayGone()
        if not self._connected:
            self._done.fire(None)
        elif tellMaster:
            self.sayExitedAfterDisconnect().addCallback(lambda _: self._closeChannel())
        else:
            self._closeChannel()

    def _closeChannel(self) -> None:
        # The channel's end (controlLost) finishes the worker.
        if self._connected and self._control is not None and self._control.transport is not None:
            self._control.transport.loseConnection()

    def controlLost(self) -> None:
        self._connected = False
        if self.listener is not None:
            self.listener.disconnected()
        if not self._disconnecting:
            # Nothing more can reach it: it must not linger (the master, if
            # it still runs, replaces it once it has exited).
            grace = min(self._shutdownTimeout, CHANNEL_LOST_GRACE)
            if not self._ending:
                self._log.warn(
                    "worker {workerId}: its control channel closed; finishing open connections"
                    " for up to {grace}s, then exiting",
                    workerId=self.workerId,
                    grace=grace,
                )
            self._leave(tellMaster=False, timeout=grace)
        elif self._drainedAll:
            self._done.fire(None)


_thisProcess: list[WorkerRuntime] = []


def publish(runtime: WorkerRuntime) -> None:
    """
    Make C{runtime} this process's worker: C{twist cluster}'s worker entry
    point hands it over this way, and the cluster API in the worker
    (C{cluster.worker}, L{twistcluster._api.thisworker}) uses it instead of
    connecting on its own.
    """
    _thisProcess[:] = [runtime]


def published() -> WorkerRuntime | None:
    """
    This process's worker runtime, if the entry point published one.
    """
    return _thisProcess[0] if _thisProcess else None
