# -*- test-case-name: tests.test_worker, tests.test_handoff, tests.test_cluster_api -*-
"""
The master's side of each worker: its control channel, its process (whose
output the master relays to its log), and its lifecycle.

Its owner (the command line's supervisor, the API's primary) hears of it
through Deferreds (L{Worker.whenReady}, L{Worker.whenExited},
L{Worker.whenWornOut}); the Node API's face of it
(L{twistcluster._api.workerface.Worker}) hears Node's events through
L{Worker.announceTo}.
"""

from __future__ import annotations

import signal as _signal
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.interfaces import IDelayedCall, IProcessTransport, IReactorTime
from twisted.logger import Logger, LogLevel
from twisted.protocols import amp
from twisted.python.failure import Failure

from .._common.events import Latch
from .._common.protocol import (
    ControlChannel,
    Disconnect,
)
from .._common.signals import toSignal
from .handles import Handles
from .handoffchannel import Answered, Failed, HandOffChannel, sendThroughCallRemote
from .lifecycle import LifecycleCore, adoptCarried, makeLifecycle

#: How a worker ended: its exit code, or the signal that killed it.
ExitStatus = tuple[int | None, _signal.Signals | None]


class Worker:
    """
    One worker process, as the master sees it.

    @ivar id: Unique in this master's life, counting from 1, never reused.
    @ivar slot: Its place among the command line's workers, 0..N-1, kept by
        its replacement (L{None} for a worker the API forked).
    @ivar generation: How many rolling restarts came before it was spawned.
    @ivar pid: The process id, kept after the process is gone.
    @ivar transport: Its process.
    @ivar exitedAfterDisconnect: Whether it was asked to leave, or said it
        leaves of its own will.
    @ivar lastError: The last error it reported (a log event at error level,
        or a line on its stderr): the culprit when it fails to boot.
    @ivar connectionsTaken: How many connections it accepted.
    @ivar connectionsRefused: How many hand-offs it refused.
    @ivar connectionLimit: After this many it is worn out (L{None}: never).
    """

    #: Seconds between SIGABRT (which makes faulthandler log the stack) and
    #: SIGKILL for a hung worker.
    abortGrace = 3.0

    _log = Logger()

    def __init__(self, id: int, reactor: IReactorTime, handles: Handles, shutdownTimeout: float) -> None:
        self.id = id
        self.slot: int | None = None
        self.generation = 0
        self.pid: int | None = None
        self.transport: IProcessTransport | None = None
        self.exitedAfterDisconnect = False
        self.lastError: str | None = None
        self.connectionsTaken = 0
        self.connectionsRefused = 0
        self.connectionLimit: int | None = None
        self._reactor = reactor
        self._handles = handles
        self._shutdownTimeout = shutdownTimeout
        self._control: ControlChannel | None = None
        self._killTimer: IDelayedCall | None = None
        self._ready: Latch[bool] = Latch()
        self._exited: Latch[ExitStatus] = Latch()
        self._wornOut: Latch[str] = Latch()
        self._announce: Callable[..., object] = lambda name, *args: None
        self._core = LifecycleCore(self)
        self._lifecycle = makeLifecycle(self._core)

    def __repr__(self) -> str:
        return f"<Worker {self.id} pid={self.pid} {self.state}>"

    # What it is now (the lifecycle's answers)

    @property
    def state(self) -> str:
        """
        Node's name for its state, for users and logs.
        """
        return self._core.state

    @property
    def everReady(self) -> bool:
        """
        Did it ever become ready?  One that dies before that failed to boot.
        """
        return self._core.everReady

    def isBooting(self) -> bool:
        return self._core.isBooting()

    def isReady(self) -> bool:
        return self._core.isReady()

    def isServing(self) -> bool:
        """
        Is it booting or ready, and not leaving?
        """
        return self._core.isServing()

    def isConnected(self) -> bool:
        return self._core.isConnected()

    def isOnline(self) -> bool:
        """
        Does it answer on its channel (it said it is online, and the channel
        is still up)?
        """
        return self._core.isOnline()

    def isDead(self) -> bool:
        return self._core.isDead()

    # What its owner and its Node face wait for

    def whenReady(self) -> Deferred[bool]:
        """
        Fires with C{True} once the worker is ready (listening), or C{False}
        if it ended (or began to leave) before that.
        """
        return self._ready.wait()

    def whenExited(self) -> Deferred[ExitStatus]:
        """
        Fires with C{(exit code, signal)} once the process has ended.
        """
        return self._exited.wait()

    def whenWornOut(self) -> Deferred[str]:
        """
        Fires with why, once it has taken its C{connectionLimit}.
        """
        return self._wornOut.wait()

    def announceTo(self, announce: Callable[..., object]) -> None:
        """
        Call C{announce(name, *args)} with each of Node's events of this
        worker: C{online}, C{listening} (its sockname), C{disconnect},
        C{exit} (code, signal), C{message} (value).
        """
        self._announce = announce

    # Acting on it

    def attach(self, process: IProcessTransport, control: ControlChannel) -> None:
        self.transport = process
        self.pid = process.pid
        self._control = control

    @property
    def control(self) -> ControlChannel | None:
        """
        The master's end of its control channel (L{None} before it is
        attached).
        """
        return self._control

    def killIn(self) -> float | None:
        """
        Seconds until it is killed (it was told to leave, or is hung), or
        L{None} if that is not planned.
        """
        timer = self._killTimer
        if timer is None or not timer.active():
            return None
        return max(0.0, timer.getTime() - self._reactor.seconds())

    def adopt(self, state: str, everReady: bool, killIn: float | None) -> None:
        """
        Take over a worker that an earlier image of this master spawned (an
        upgrade): it is in C{state} already, and its process and channel
        are attached next.
        """
        self._core.everReady = everReady
        adoptCarried(self._lifecycle, state)
        if killIn is not None:
            leaving = self._core.isLeaving()
            self._killTimer = self._reactor.callLater(
                killIn, self._outOfTime if leaving else self.kill, *(() if leaving else ("KILL",))
            )

    def callRemote(self, command: type[amp.Command], **arguments: Any) -> Deferred[Any]:
        assert self._control is not None
        answer: Deferred[Any] = self._control.callRemote(command, **arguments)
        return answer

    def sendNewConn(self, key: bytes, fds: list[int], answered: Answered, failed: Failed, *args: Any) -> None:
        """
        Hand C{fds} over for C{key} (see L{HandOffChannel.sendNewConn}).
        """
        control = self._control
        assert control is not None
        if isinstance(control, HandOffChannel):
            control.sendNewConn(key, fds, answered, failed, *args)
        else:
            sendThroughCallRemote(control.callRemote, key, fds, answered, failed, *args)

    def sendMessage(self, chunks: list[bytes]) -> Deferred[None] | None:
        """
        Send a user message (already encoded) to the worker.

        @return: Fires once the worker has it; L{None} if not connected.
        """
        if self._control is None or not self.isConnected() or self._control.transport is None:
            return None
        return self._control.sendChunks(chunks)

    def closeChannel(self) -> None:
        """
        Close the control channel (Node's C{worker.process.disconnect()}): the
        worker sees its master gone, finishes its connections and exits.
        """
        if self._control is not None and self._control.transport is not None:
            self._control.transport.loseConnection()

    def disconnect(self) -> None:
        """
        Ask the worker to close its servers, finish its connections and exit;
        it is killed if it has not exited after the shutdown timeout.
        """
        self.exitedAfterDisconnect = True
        self._lifecycle.disconnect()

    def kill(self, signal: str | int = "SIGTERM") -> bool:
        """
        Send C{signal} (a number, or a name such as C{"KILL"} or
        C{"SIGABRT"}) to the worker process now.

        @return: Whether it was sent (the process was still running).
        """
        if self.transport is None:
            return False
        try:
            self.transport.signalProcess(int(toSignal(signal)))
        except ProcessExitedAlready:
            return False
        return True

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
            self._killTimer = self._reactor.callLater(self.abortGrace, self._abortTimeUp)

    def _abortTimeUp(self) -> None:
        # A worker stopped (SIGSTOP) or ignoring SIGABRT is still there.
        self._killTimer = None
        self.kill("KILL")

    def connectionTaken(self) -> None:
        self.connectionsTaken += 1
        if self.connectionsTaken == self.connectionLimit:
            self._wornOut.fire(f"took {self.connectionsTaken} connections")

    # Inputs from the control channel and the process

    def saidOnline(self) -> None:
        self._lifecycle.online()

    def acceptsListens(self) -> bool:
        """
        May it listen (it is online, and not leaving)?
        """
        return self._core.acceptsListens()

    def listeningOn(self, key: str, address: dict[str, Any] | None = None) -> None:
        if self.isServing() and self._handles.workerListening(self, key):
            self._lifecycle.listening()
            if address is not None:
                self._announce("listening", address)

    def messageReceived(self, value: Any) -> None:
        self._announce("message", value)

    def controlLost(self) -> None:
        self._lifecycle.controlLost()

    def processEnded(self, reason: Failure) -> None:
        # ProcessDone or ProcessTerminated
        ended: Any = reason.value
        signal = ended.signal
        self._lifecycle.exited(ended.exitCode, None if signal is None else toSignal(signal))

    # LifecycleHooks

    def becameOnline(self) -> None:
        self._log.debug("worker {workerId} (pid {pid}) online", workerId=self.id, pid=self.pid)
        self._announce("online")

    def becameReady(self) -> None:
        self._log.info(
            "worker {workerId} (pid {pid}) ready", workerId=self.id, pid=self.pid, clusterEvent="ready"
        )
        self._ready.fire(True)

    def beganDisconnect(self, connected: bool) -> None:
        # Out of rotation now, not when the worker gets round to closing.
        self._handles.workerLeaving(self)
        self._ready.fire(False)
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
        # Before AMP fails the outstanding hand-offs: nothing new for it.
        # The sockets it never acknowledged stay its own until the process
        # has exited (ended): the process may still be reading them, and no
        # socket is given to a second process while the first one lives.
        self._handles.workerLeaving(self)
        self._announce("disconnect")

    def adopted(self) -> None:
        if self._core.isReady():
            self._ready.fire(True)
        elif not self._core.isServing():
            self._ready.fire(False)

    def ended(self, code: int | None, signal: _signal.Signals | None) -> None:
        if self._killTimer is not None and self._killTimer.active():
            self._killTimer.cancel()
        self._killTimer = None
        self._ready.fire(False)
        level = LogLevel.info if self.exitedAfterDisconnect else LogLevel.warn
        self._log.emit(
            level,
            "worker {workerId} (pid {pid}) exited with {status}",
            workerId=self.id,
            pid=self.pid,
            status=f"signal {signal}" if signal is not None else f"code {code}",
        )
        # Gone: what it never acknowledged goes to other workers now.
        self._handles.workerGone(self)
        # Its Node face first: the primary's cluster.workers has let it go
        # by the time its owner hears.
        self._announce("exit", code, signal)
        self._exited.fire((code, signal))
