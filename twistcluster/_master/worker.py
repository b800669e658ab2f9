# -*- test-case-name: tests.test_handoff, tests.test_resilience -*-
"""
The master's side of each worker: its control channel, its process (whose
output the master relays to its log), and its lifecycle.
"""

from __future__ import annotations

from typing import Any, Protocol

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IProcessTransport, IReactorTime
from twisted.logger import Logger, LogLevel
from twisted.protocols import amp
from twisted.python.failure import Failure

from .._api.workerface import ChildProcess, ListeningAddress, WorkerAPI, toSignal
from .._common.endpoints import ListenSpec
from .._common.protocol import (
    Close,
    ConnectionsClosed,
    ControlChannel,
    Disconnect,
    ExitedAfterDisconnect,
    Listening,
    ListenRefused,
    Online,
    QueryServer,
)
from .handles import Handles
from .lifecycle import LifecycleCore, makeLifecycle


class WorkerEvents(Protocol):
    """
    What a worker's owner hears about it (the supervisor, on the command
    line).
    """

    def workerReady(self, worker: Worker) -> None: ...

    def workerExited(self, worker: Worker, code: int | None, signal: int | None) -> None: ...

    def workerWornOut(self, worker: Worker, why: str) -> None: ...


class Worker(WorkerAPI):
    """
    One worker process, as the master sees it (Node's C{Worker} in the
    primary; L{WorkerAPI} has its events, their Deferreds, and C{send}).

    @ivar id: Unique in this master's life, counting from 1, never reused.
    @ivar slot: Its place among the command line's workers, 0..N-1, kept by
        its replacement (L{None} for a worker the API forked).
    @ivar generation: How many rolling restarts came before it was spawned.
    @ivar pid: The process id, kept after the process is gone.
    @ivar exitedAfterDisconnect: Whether the master asked it to leave.
    @ivar everReady: Whether it ever became ready (listening); a worker that
        dies before that failed to boot.
    @ivar lastError: The last error it reported (a log event at error level,
        or a line on its stderr): the culprit when it fails to boot.
    @ivar connectionsTaken: How many connections it accepted.
    @ivar connectionLimit: After this many it is replaced (L{None}: never).
    """

    #: Seconds between SIGABRT (which makes faulthandler log the stack) and
    #: SIGKILL for a hung worker.
    abortGrace = 3.0

    _log = Logger()

    def __init__(
        self,
        id: int,
        reactor: IReactorTime,
        handles: Handles,
        events: WorkerEvents,
        shutdownTimeout: float,
    ) -> None:
        self.id = id
        self.slot: int | None = None
        self.generation = 0
        self.pid: int | None = None
        self.process: ChildProcess | None = None
        self.exitedAfterDisconnect = False
        self.everReady = False
        self.lastError: str | None = None
        self.connectionsTaken = 0
        self.connectionLimit: int | None = None
        self._reactor = reactor
        self._handles = handles
        self._events = events
        self._shutdownTimeout = shutdownTimeout
        self._control: ControlChannel | None = None
        self._killTimer: IDelayedCall | None = None
        self._exit: tuple[int | None, int | None] | None = None
        self._exitWaiters: list[Deferred[tuple[int | None, int | None]]] = []
        self._readyWaiters: list[Deferred[bool]] = []
        self._core = LifecycleCore(self)
        self._lifecycle = makeLifecycle(self._core)
        self._initWorkerAPI()

    def __repr__(self) -> str:
        return f"<Worker {self.id} pid={self.pid} {self.state}>"

    @property
    def state(self) -> str:
        return self._core.state

    def isServing(self) -> bool:
        """
        Is it alive and not leaving (booting, or ready)?
        """
        return self.state in ("spawning", "online", "listening")

    def isReady(self) -> bool:
        """
        Is it listening, and not leaving?
        """
        return self.state == "listening"

    def attach(self, process: IProcessTransport, control: ControlChannel) -> None:
        self.process = ChildProcess(process, control)
        self.pid = process.pid
        self._control = control

    def callRemote(self, command: type[amp.Command], **arguments: Any) -> Deferred[Any]:
        assert self._control is not None
        return self._control.callRemote(command, **arguments)

    def disconnect(self) -> Worker:
        """
        Ask the worker to close its servers, finish its connections and exit;
        it is killed if it has not exited after the shutdown timeout.
        """
        self.exitedAfterDisconnect = True
        self._lifecycle.disconnect()
        return self

    def kill(self, signal: str | int = "SIGTERM") -> None:
        """
        Send C{signal} (a number, or a name such as C{"KILL"} or
        C{"SIGABRT"}) to the worker process now, without waiting for a
        graceful disconnect (Node's C{worker.kill()} in the primary).
        """
        if self.process is not None:
            self.process.kill(signal)

    destroy = kill

    def whenReady(self) -> Deferred[bool]:
        """
        Fires with C{True} once the worker is ready (listening), or C{False}
        if it ended (or began to leave) before that.
        """
        if self.everReady or self.state not in ("spawning", "online"):
            return succeed(self.everReady)
        waiter: Deferred[bool] = Deferred()
        self._readyWaiters.append(waiter)
        return waiter

    def _settleReady(self, ready: bool) -> None:
        waiters, self._readyWaiters = self._readyWaiters, []
        for waiter in waiters:
            waiter.callback(ready)

    def abort(self, why: str) -> None:
        """
        The worker is hung: take it out of rotation, then SIGABRT (its
        faulthandler logs where it was stuck), then SIGKILL.  It is replaced
        like a crashed worker.
        """
        self._log.error(
            "worker {workerId} (pid {pid}) is hung ({why}); aborting it",
            workerId=self.id,
            pid=self.pid,
            why=why,
        )
        # The culprit if it never becomes ready (its faulthandler report,
        # read by the output relay, adds where it was stuck).
        self.lastError = f"worker {self.id} {why}"
        self._handles.workerLeaving(self)
        self.kill("ABRT")
        if self._killTimer is None:
            self._killTimer = self._reactor.callLater(self.abortGrace, self.kill, "KILL")

    def connectionTaken(self) -> None:
        self.connectionsTaken += 1
        if self.connectionsTaken == self.connectionLimit:
            self._events.workerWornOut(self, f"took {self.connectionsTaken} connections")

    def whenExited(self) -> Deferred[tuple[int | None, int | None]]:
        """
        Fires with C{(exit code, signal)} once the process has ended.
        """
        if self._exit is not None:
            return succeed(self._exit)
        waiter: Deferred[tuple[int | None, int | None]] = Deferred()
        self._exitWaiters.append(waiter)
        return waiter

    # Inputs from the control channel and the process

    def said(self, event: str) -> None:
        if event == "online":
            self._lifecycle.online()

    def listeningOn(self, key: str, address: dict[str, Any] | None = None) -> None:
        if self.state in ("spawning", "online", "listening") and self._handles.workerListening(self, key):
            self._lifecycle.listening()
            if address is not None:
                self._announce("listening", ListeningAddress.fromSockname(address))

    def controlLost(self) -> None:
        self._lifecycle.controlLost()

    def processEnded(self, reason: Failure) -> None:
        signal = reason.value.signal
        self._lifecycle.exited(reason.value.exitCode, None if signal is None else toSignal(signal))

    # LifecycleHooks

    def becameOnline(self) -> None:
        self._log.debug("worker {workerId} (pid {pid}) online", workerId=self.id, pid=self.pid)
        self._announce("online")

    def becameReady(self) -> None:
        self.everReady = True
        self._log.info(
            "worker {workerId} (pid {pid}) ready", workerId=self.id, pid=self.pid, clusterEvent="ready"
        )
        self._events.workerReady(self)
        self._settleReady(True)

    def beganDisconnect(self, connected: bool) -> None:
        # Out of rotation now, not when the worker gets round to closing.
        self._handles.workerLeaving(self)
        self._settleReady(False)
        if connected:
            self.callRemote(Disconnect).addErrback(lambda reason: None)
        if self._killTimer is None:
            self._killTimer = self._reactor.callLater(self._shutdownTimeout, self._outOfTime)

    def _outOfTime(self) -> None:
        self._killTimer = None
        self._log.warn(
            "worker {workerId} (pid {pid}) still running {timeout}s after it was asked to stop; killing it",
            workerId=self.id,
            pid=self.pid,
            timeout=self._shutdownTimeout,
        )
        self.kill("KILL")

    def lostControl(self) -> None:
        # Before AMP fails the outstanding hand-offs: they must go to another
        # worker, never back to this one.
        self._handles.workerGone(self)
        self._announce("disconnect")

    def ended(self, code: int | None, signal: int | None) -> None:
        if self._killTimer is not None:
            self._killTimer.cancel()
            self._killTimer = None
        self._exit = (code, signal)
        self._settleReady(False)
        level = LogLevel.info if self.exitedAfterDisconnect else LogLevel.warn
        self._log.emit(
            level,
            "worker {workerId} (pid {pid}) exited with {status}",
            workerId=self.id,
            pid=self.pid,
            status=f"signal {signal}" if signal is not None else f"code {code}",
        )
        if self.process is not None:
            self.process.ended(code, signal)  # type: ignore[arg-type]
        waiters, self._exitWaiters = self._exitWaiters, []
        for waiter in waiters:
            waiter.callback(self._exit)
        self._events.workerExited(self, code, signal)
        self._announce("exit", code, signal)


class MasterControl(ControlChannel):
    """
    The master's end of one worker's control channel.
    """

    def __init__(self, worker: Worker, handles: Handles) -> None:
        super().__init__()
        self._worker = worker
        self._handles = handles

    @Online.responder
    def online(self, workerId: int, pid: int) -> dict[str, Any]:
        self._worker.said("online")
        return {}

    @QueryServer.responder
    def queryServer(self, spec: dict[str, Any], index: int) -> dict[str, Any]:
        if self._worker.state not in ("online", "listening"):
            raise ListenRefused(f"worker {self._worker.id} is {self._worker.state}")
        try:
            listenSpec = ListenSpec.fromJSON(spec)
        except TypeError as e:
            raise ListenRefused(f"malformed listen: {e}") from e
        return self._handles.query(listenSpec, index).answer(self._worker)

    @Listening.responder
    def listening(self, key: str, address: Any) -> dict[str, Any]:
        self._worker.listeningOn(key, address)
        return {}

    @ExitedAfterDisconnect.responder
    def exitedAfterDisconnect(self) -> dict[str, Any]:
        self._worker.exitedAfterDisconnect = True
        return {}

    def messageReceived(self, value: Any) -> None:
        self._worker._announce("message", value)

    @ConnectionsClosed.responder
    def connectionsClosed(self, key: str, count: int) -> dict[str, Any]:
        self._handles.connectionsClosed(self._worker, key, count)
        return {}

    @Close.responder
    def close(self, key: str) -> dict[str, Any]:
        self._handles.workerClosed(self._worker, key)
        return {}

    def connectionLost(self, reason: Failure) -> None:
        self._worker.controlLost()
        super().connectionLost(reason)
