# -*- test-case-name: tests.test_cluster_api, tests.test_node_api -*-
"""
C{cluster} in a worker, as Node's C{cluster} module is in a child:
C{cluster.worker} (this worker: C{send}, C{disconnect}, C{kill}, its
C{'message'} and C{'disconnect'} events) and listens that go through the
primary.

A worker connects to its primary as soon as both C{twistcluster} is
imported and a reactor is installed (whichever comes last), or on the first
use of C{cluster}, so that any reactor the application installs is the one
used.  From then on the reactor's own listens (C{listenTCP}, C{listenSSL}, C{listenUNIX},
C{listenUDP}, and every endpoint built on them) go through the primary, and
the reactor stops once the worker has disconnected and finished its
connections, so that C{reactor.run()} returns and the script ends.
"""

from __future__ import annotations

import os
import signal as _signal
import stat
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import ReactorNotRunning
from twisted.internet.interfaces import IProtocolFactory, IReactorCore

from .._common.environment import WORKER_ID_VARIABLE
from .._common.events import EventEmitter, Latch
from .._common.messages import encodeMessage
from .._common.policies import SCHED_LEAST_CONN, SCHED_NONE, SCHED_REUSEPORT, SCHED_RR
from .._common.protocol import CONTROL_FD
from .._common.reactors import IWorkerReactor, narrowed
from .._common.signals import toSignal
from .workerface import Worker

if TYPE_CHECKING:
    # Imported when needed: `python -m twistcluster._worker.main` imports
    # this package first, which must not have imported it already.
    from .._worker.runtime import WorkerRuntime


class NotAWorker(RuntimeError):
    """
    C{TWISTCLUSTER_WORKER_ID} is set, but this process was not started by a
    primary: there is no control channel.
    """


class ThisProcess(EventEmitter):
    """
    This worker's process (Node's C{process} in a worker): its pid, and the
    same C{'message'} and C{'disconnect'} events as C{cluster.worker}.
    """

    def __init__(self, worker: ThisWorker) -> None:
        self.pid = os.getpid()
        self._worker = worker

    @property
    def connected(self) -> bool:
        return self._worker.isConnected()

    def send(self, message: Any, callback: Callable[[BaseException | None], object] | None = None) -> bool:
        return self._worker.send(message, callback)


class ThisWorker(EventEmitter):
    """
    This worker, in the worker (Node's C{cluster.worker}).

    Events: C{'message'} (message), C{'disconnect'}.

    @ivar id: This worker's id, as the primary knows it.
    @ivar state: C{'online'}, then C{'disconnecting'} or C{'destroying'},
        then C{'disconnected'}.
    @ivar exitedAfterDisconnect: Whether this worker is leaving of its own
        will, or because the primary asked.
    """

    def __init__(self, runtime: WorkerRuntime) -> None:
        self.id = runtime.workerId
        self.state = "online"
        self.exitedAfterDisconnect = False
        self.process = ThisProcess(self)
        self._runtime = runtime
        self._disconnected: Latch[None] = Latch()
        runtime.listener = self

    def __repr__(self) -> str:
        return f"<ThisWorker {self.id} {self.state}>"

    def isConnected(self) -> bool:
        return self._runtime.connected

    def isDead(self) -> bool:
        return False

    def whenDisconnected(self) -> Deferred[None]:
        """
        Fires once the control channel to the primary has closed.
        """
        return self._disconnected.wait()

    def send(self, message: Any, callback: Callable[[BaseException | None], object] | None = None) -> bool:
        """
        Send C{message} (any JSON-serialisable value) to the primary, where
        the worker and the cluster emit C{'message'}.

        @param callback: Called with L{None} once the primary has it, or
            with the error if it never will (L{MessageTooLarge
            <twistcluster._common.messages.MessageTooLarge>}: longer than
            the primary's C{maxMessageSize}).
        @return: Whether it was sent (C{False} once disconnected).
        @raise TypeError: C{message} is not JSON-serialisable.
        """
        delivered = self._runtime.sendMessage(encodeMessage(message))
        if delivered is None:
            return False
        if callback is not None:
            delivered.addCallbacks(lambda _: callback(None), lambda reason: callback(reason.value))
        delivered.addErrback(lambda reason: None)
        return True

    def disconnect(self) -> ThisWorker:
        """
        Close every server, wait for their connections to end, tell the
        primary this worker leaves of its own will, and close the channel:
        C{'disconnect'} follows, then the reactor stops.
        """
        if self.state == "online":
            self.state = "disconnecting"
            self.exitedAfterDisconnect = True
            self._runtime.leave()
        return self

    def kill(self, signal: str | int = "SIGTERM") -> None:
        """
        Tell the primary this worker leaves of its own will, then kill this
        process with C{signal}.

        Node's documentation says a worker kills itself with C{signal}; its
        code ignores C{signal} and exits 0.  This follows the documentation.
        """
        signum = toSignal(signal)
        self.state = "destroying"
        self.exitedAfterDisconnect = True
        self._runtime.sayExitedAfterDisconnect().addCallback(lambda _: _killSelf(signum))

    destroy = kill

    # RuntimeListener

    # As in Node, the process hears first, then the worker.

    def messageReceived(self, value: Any) -> None:
        self.process.emit("message", value)
        self.emit("message", value)

    def disconnected(self) -> None:
        self.state = "disconnected"
        self._disconnected.fire(None)
        self.process.emit("disconnect")
        self.emit("disconnect")


def _killSelf(signum: _signal.Signals) -> None:
    if signum not in (_signal.SIGKILL, _signal.SIGSTOP):
        # Our own handlers (SIGTERM drains) must not stand in the way.
        _signal.signal(signum, _signal.SIG_DFL)
    os.kill(os.getpid(), signum)


class WorkerCluster(EventEmitter):
    """
    Node's C{cluster} in a worker.
    """

    Worker = Worker
    SCHED_NONE = SCHED_NONE
    SCHED_RR = SCHED_RR
    SCHED_LEAST_CONN = SCHED_LEAST_CONN
    SCHED_REUSEPORT = SCHED_REUSEPORT

    def __init__(
        self, workerId: str, reactor: IWorkerReactor | None = None, controlFD: int = CONTROL_FD
    ) -> None:
        self._workerId = workerId
        self._givenReactor = reactor
        self._controlFD = controlFD
        self._worker: ThisWorker | None = None
        self._runtime: WorkerRuntime | None = None
        self._restoreInstallReactor: Callable[[], None] | None = None

    # The first use of cluster in a worker connects it (Node does it before
    # any user code runs; a Python module can only do it lazily).

    @property
    def isPrimary(self) -> bool:
        self._activate()
        return False

    isMaster = isPrimary

    @property
    def isWorker(self) -> bool:
        self._activate()
        return True

    @property
    def worker(self) -> ThisWorker:
        """
        This worker.
        """
        self._activate()
        assert self._worker is not None
        return self._worker

    def listen(self, description: str, factory: IProtocolFactory, exclusive: bool = False) -> Deferred[Any]:
        """
        Listen on a server endpoint description through the primary: the
        n-th listen on one address in every worker shares one socket.

        @param exclusive: Listen in this worker alone, not through the
            primary (Node's C{exclusive: true}).
        @return: Fires with the listening port once the primary granted it;
            fails with L{twisted.internet.error.CannotListenError}.
        """
        self._activate()
        assert self._runtime is not None
        reactor = self._runtime.clusterReactor
        endpoint = serverFromString(reactor.direct if exclusive else reactor, description)
        listening: Deferred[Any] = endpoint.listen(factory)
        if not exclusive:
            listening.addCallback(lambda port: port.whenListening())
        return listening

    def activateWithReactor(self) -> None:
        """
        Connect to the primary now if a reactor is installed, else as soon
        as one is (C{twistcluster} is imported in a worker: from then on,
        every listen of this process goes through the primary, as in Node).
        """
        if "twisted.internet.reactor" in sys.modules:
            self._activateIfWorker()
            return
        from twisted.internet import main

        original = main.installReactor

        def installReactor(reactor: IReactorCore) -> None:
            # Installed: what _activate imports as the reactor from now on.
            original(reactor)
            self._manual()
            self._activateIfWorker()

        def restore() -> None:
            if main.installReactor is installReactor:
                main.installReactor = original

        main.installReactor = installReactor
        self._restoreInstallReactor = restore

    def _manual(self) -> None:
        """
        Connect only when asked: no longer when a reactor is installed.
        """
        if self._restoreInstallReactor is not None:
            self._restoreInstallReactor()
            self._restoreInstallReactor = None

    def _activateIfWorker(self) -> None:
        try:
            self._activate()
        except NotAWorker:
            # A process that inherited the variable without the channel (a
            # grandchild): it fails when it uses cluster, not on import.
            pass

    def _activate(self) -> None:
        if self._worker is not None:
            return
        self._manual()
        from .._worker.runtime import published

        entryPoint = published()
        if entryPoint is not None:
            # twist cluster's worker, whose entry point runs it.
            self._runtime = entryPoint
            self._worker = ThisWorker(entryPoint)
            return
        try:
            workerId = int(self._workerId)
            isSocket = stat.S_ISSOCK(os.fstat(self._controlFD).st_mode)
        except (ValueError, OSError):
            isSocket = False
        if not isSocket:
            raise NotAWorker(
                f"{WORKER_ID_VARIABLE}={self._workerId!r} is set, but this process has no "
                f"control channel from a primary on fd {self._controlFD}"
            )
        if self._givenReactor is None:
            from twisted.internet import reactor as installed

            self._givenReactor = narrowed(installed, IWorkerReactor)
        reactor = self._givenReactor
        from .._worker.main import handleSignals
        from .._worker.runtime import WorkerRuntime

        runtime = WorkerRuntime(reactor, workerId, controlFD=self._controlFD, failOnRefusal=False)
        handleSignals(reactor, runtime)
        runtime.connect()
        runtime.routeListens()
        self._runtime = runtime
        self._worker = ThisWorker(runtime)
        runtime.whenDone().addBoth(lambda _: _stop(reactor))


def _stop(reactor: IReactorCore) -> None:
    if not reactor.running:
        reactor.callWhenRunning(_stop, reactor)
        return
    try:
        reactor.stop()
    except ReactorNotRunning:
        pass
