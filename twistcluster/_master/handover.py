# -*- test-case-name: tests.test_handover, tests.test_upgrade -*-
"""
The old image's part of an upgrade: quiesce, write down, hand over.

    1. L{Handover.quiesce}: the hand-off ports stop accepting (the kernel
       backlog holds arriving clients; under C{none} and C{reuseport} the
       workers accept on, the master never did), and the master waits until
       every accepted connection is with a worker (acked, or refused and
       handed again), every call it made on a control channel is answered,
       and everything it wrote is sent.
    2. L{Handover.capture}, in the same turn of the reactor as the C{exec}:
       the control channels and output pipes stop being read (what the
       workers send meanwhile waits in the kernel), and everything is
       written down as a L{CarriedState}: what AMP had read of a box but not
       parsed is carried as bytes, so no half-read box is lost.
    3. L{execute}: every descriptor the state names is made inheritable, the
       master's signals are held (blocked: one that arrives waits for the
       new image's handlers, and none kills it meanwhile), and C{exec}.  If
       C{exec} itself fails, all of it is undone (L{Handover.undo}) and the
       old image serves on.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterable, Sequence
from typing import Any, NoReturn

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from .._common.twistedinternals import outputDescriptors, pauseOutput, unparsedBytes
from .carried import CarriedHandle, CarriedSupervisor, CarriedWorker, encodeBytes
from .handles import Handles, HandOffHandle
from .handoffchannel import HandOffChannel
from .picking import LeastConnections
from .relaunch import HELD_SIGNALS
from .sharedhandles import ReusePortHandle, SharedHandle
from .supervisor import Supervisor
from .worker import Worker

#: How often the master looks whether it is quiet yet (seconds).
QUIET_POLL = 0.002


class HandoverFailed(Exception):
    """
    The master could not get quiet in time; nothing was handed over.
    """


class Handover:
    """
    Quiesce the master and write down what the next image takes over.

    @ivar _deadline: Seconds the master may take to get quiet.
    """

    _log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        handles: Handles,
        supervisor: Supervisor[Worker],
        lastId: int,
        deadline: float,
    ) -> None:
        self._clock = clock
        self._handles = handles
        self._supervisor = supervisor
        self._lastId = lastId
        self._deadline = deadline
        self._held: list[HandOffHandle] = []
        self._captured: list[Worker] = []
        self._poll: LoopingCall | None = None

    def quiesce(self) -> Deferred[None]:
        """
        Stop accepting and wait until the master is quiet.

        @return: Fires once it is; fails with L{HandoverFailed} after the
            deadline, accepting again.
        """
        self._held = [h for h in self._handles if isinstance(h, HandOffHandle)]
        for handle in self._held:
            handle.holdBacklog()
        started = self._clock.seconds()
        quiet: Deferred[None] = Deferred()

        def look() -> None:
            if self._isQuiet():
                self._stopPolling()
                quiet.callback(None)
            elif self._clock.seconds() - started > self._deadline:
                self._stopPolling()
                self.undo()
                quiet.errback(
                    HandoverFailed(f"the master was not quiet after {self._deadline:g}s: {self._busy()}")
                )

        self._poll = LoopingCall(look)
        self._poll.clock = self._clock
        self._poll.start(QUIET_POLL, now=True)
        return quiet

    def _stopPolling(self) -> None:
        if self._poll is not None and self._poll.running:
            self._poll.stop()
        self._poll = None

    def _isQuiet(self) -> bool:
        return not self._busy()

    def _busy(self) -> str:
        for handle in self._held:
            if not handle.scheduler.idle:
                return f"hand-offs on {handle.key} not answered"
        for worker in self._supervisor.workers.values():
            control = worker.control
            if control is not None and not control.isQuiet():  # type: ignore[attr-defined]
                return f"worker {worker.id}'s control channel is busy"
        return ""

    def undo(self) -> None:
        """
        Serve on: read the channels and pipes again, accept again.
        """
        self._stopPolling()
        for worker in self._captured:
            control = worker.control
            if control is not None and control.transport is not None:
                control.transport.startReading()  # type: ignore[attr-defined]
            pauseOutput(worker.transport, False)
        self._captured = []
        for handle in self._held:
            handle.releaseBacklog()
        self._held = []

    def capture(self) -> tuple[list[CarriedHandle], list[CarriedWorker], CarriedSupervisor]:
        """
        Stop reading every control channel and output pipe, and write down
        the handles, the workers and the supervisor.
        """
        workers = [self._carryWorker(worker) for worker in list(self._supervisor.workers.values())]
        handles = [carryHandle(self._handles, handle) for handle in self._handles]
        supervisor = self._supervisor
        wornOut, dismissed, hung = supervisor.leaving()
        carried = CarriedSupervisor(
            supervisor.size,
            supervisor.generation,
            self._lastId,
            {str(cause): count for cause, count in supervisor.restarts.items()},
            wornOut,
            dismissed,
            hung,
            supervisor.maxSize,
        )
        return handles, workers, carried

    def _carryWorker(self, worker: Worker) -> CarriedWorker:
        self._captured.append(worker)
        control, fd, unparsed, sent = worker.control, -1, b"", 0
        if control is not None and control.transport is not None:
            transport: Any = control.transport
            transport.stopReading()
            fd = transport.fileno()
            # The master's channel parses boxes itself; any other, AMP does.
            unparsed = control.unparsed() if isinstance(control, HandOffChannel) else unparsedBytes(control)
            # The master takes no descriptor from a worker (each is closed
            # as it arrives): only the numbering of those it sent goes on.
            sent = control.descriptorsSent
        process: Any = worker.transport
        pauseOutput(process, True)
        protocol = getattr(process, "proto", None)
        pending = {}
        for childFD, lines in getattr(protocol, "lines", {}).items():
            data, parts = lines.pending()
            if data or parts:
                pending[childFD] = (encodeBytes(data), parts)
        status = process.status if process is not None and process.pid is None else None
        assert worker.pid is not None
        return CarriedWorker(
            worker.id,
            worker.pid,
            worker.slot,
            worker.generation,
            worker.state,
            worker.everReady,
            fd,
            outputDescriptors(process),
            encodeBytes(unparsed),
            sent,
            pending,
            worker.exitedAfterDisconnect,
            worker.lastError,
            worker.connectionsTaken,
            worker.connectionLimit,
            worker.killIn(),
            status,
        )


def carryHandle(handles: Handles, handle: Any) -> CarriedHandle:
    """
    Write down one listening handle: its socket, and the workers it serves.
    """
    listening = sorted(w.id for w in handles.listeningOn(handle.key))
    onDemand = handles.isOnDemand(handle.key)
    spec = handle.spec.toJSON()
    if isinstance(handle, HandOffHandle):
        scheduler = handle.scheduler
        strategy = scheduler.strategy
        handing = scheduler.workers
        live = {w.id: strategy.live(w) for w in handing} if isinstance(strategy, LeastConnections) else {}
        return CarriedHandle(
            handle.key,
            spec,
            handle.scheduling,
            handle.fileno(),
            listening,
            [w.id for w in handing],
            live,
            onDemand=onDemand,
        )
    assert isinstance(handle, SharedHandle)
    balance = handle.balance
    balanceSlots: dict[int, int] = {}
    if balance is not None:
        balanceSlots = {worker.id: slot for worker, slot in balance.slots().items()}  # type: ignore[attr-defined]
    kept = []
    presized = False
    if isinstance(handle, ReusePortHandle):
        presized = handle.presized
        for one in handle.keptSockets():
            kept.append(
                (one.socket.fileno(), one.slot, {w.id: leaving for w, leaving in one.holders.items()})
            )
    return CarriedHandle(
        handle.key,
        spec,
        handle.scheduling,
        handle.fileno(),
        listening,
        balanceFD=-1 if balance is None else balance.descriptor,
        balanceSlots=balanceSlots,
        onDemand=onDemand,
        kept=kept,
        presized=presized,
    )


def holdSignals() -> set[int]:
    """
    Block the master's signals (they wait, pending, for whoever runs next).

    @return: The mask before.
    """
    return signal.pthread_sigmask(signal.SIG_BLOCK, HELD_SIGNALS)


def releaseSignals(previous: Iterable[int]) -> None:
    signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def execute(argv: Sequence[str], cwd: str, environ: dict[str, str], descriptors: Iterable[int]) -> NoReturn:
    """
    Replace this process's image with C{argv}, run from C{cwd} with
    C{environ}, keeping C{descriptors} open.  The caller holds the signals.

    @raise OSError: The C{exec} failed; the descriptors are close-on-exec
        again, and the directory is what it was.
    """
    # The standard streams are inherited as they are.
    kept = sorted(fd for fd in set(descriptors) if fd > 2)
    here = os.getcwd()
    for fd in kept:
        os.set_inheritable(fd, True)
    try:
        os.chdir(cwd)
        sys.stdout.flush()
        sys.stderr.flush()
        os.execve(argv[0], list(argv), environ)
    except OSError:
        for fd in kept:
            os.set_inheritable(fd, False)
        os.chdir(here)
        raise
