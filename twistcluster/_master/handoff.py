# -*- test-case-name: tests.test_handoffhandle, tests.test_handoff -*-
"""
L{HandOffHandle}: a listening socket in the master that accepts connections
and hands each one to a worker over its control channel (C{rr},
C{least-conn}).  The hottest path of the master: per connection it does
plain integer and list work; per batch (one C{NewConn} per worker per turn
of the reactor) a little more.

A socket stays the master's until the worker that was handed it answers:
accepted (the master closes its copy), refused (another worker gets it),
or refused for want of descriptors (another worker gets it, and that
worker is left be for L{OUT_OF_DESCRIPTORS_PAUSE} seconds).  A worker that
never answers keeps it until the worker is gone: its process has exited
(the monitor kills a worker whose oldest hand-off goes unanswered too long,
L{HandOffHandle.oldestUnanswered}), so no socket is ever read by two
processes.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, Protocol

from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from .._common.endpoints import ListenSpec
from .._common.events import Latch
from .._common.reactors import IAcceptingReactor
from .._common.sockets import acceptQueue, socknameOf
from .handoffchannel import sendThroughCallRemote
from .handoffports import listenForHandOff
from .picking import LeastConnections, PickStrategy, RoundRobin
from .scheduling import HandOffScheduler

#: Seconds a worker that refused sockets for want of descriptors is handed
#: nothing, before it is tried again (as the accept loop retries EMFILE).
OUT_OF_DESCRIPTORS_PAUSE = 0.1
#: Seconds between the lines that say a worker is out of descriptors.
SHORT_SAID_EVERY = 10.0
#: Seconds a hand-off may wait for room in the window of the worker
#: least-conn would rather give it to (an ack takes well under a
#: millisecond from a worker that is not blocked).
HOLD_LIMIT = 0.05


class HandOffTarget(Protocol):
    """
    What a handle needs of a worker: its id (for logs) and its control channel.
    """

    id: int
    connectionsRefused: int

    def connectionTaken(self) -> None: ...

    def __hash__(self) -> int: ...

    def callRemote(self, command: type, **kwargs: Any) -> Deferred[dict[str, Any]]: ...


class HandOffHandle:
    """
    A listening socket in the master that accepts connections and hands each
    one to a worker, as its pick strategy chooses.
    """

    _log = Logger()

    def __init__(
        self,
        reactor: IAcceptingReactor,
        key: str,
        spec: ListenSpec,
        strategy: PickStrategy[HandOffTarget] | None = None,
        close: Callable[[int], object] = os.close,
        adopted: int | None = None,
    ) -> None:
        """
        @param adopted: A listening socket to serve (an earlier image of the
            master bound it), instead of binding one; it is duplicated.
        """
        self.key = key
        self.spec = spec
        self._reactor = reactor
        self._strategy: PickStrategy[HandOffTarget] = strategy if strategy is not None else RoundRobin()
        self._leastConnections = isinstance(self._strategy, LeastConnections)
        self.scheduling = "least-conn" if self._leastConnections else "rr"
        self._idle: Latch[None] | None = None
        self._outgoing: dict[HandOffTarget, list[int]] = {}
        self._flushing: IDelayedCall | None = None
        #: Each worker's batches in flight (by serial, oldest first): when
        #: each was sent.
        self._unanswered: dict[HandOffTarget, dict[int, float]] = {}
        self._lastBatch = 0
        #: The workers left be for want of descriptors, and when they are
        #: tried again.
        self._shortOf: dict[HandOffTarget, IDelayedCall] = {}
        self._shortSaid: dict[HandOffTarget, float] = {}
        self._scheduler: HandOffScheduler[HandOffTarget] = HandOffScheduler(
            self._handOff, close, self._strategy, holdStarted=self._holdStarted
        )
        self._holdTimer: IDelayedCall | None = None
        #: New connections are left in the backlog (an upgrade): nothing
        #: resumes accepting but L{releaseBacklog}.
        self._backlogHeld = False
        self._keyBytes = key.encode("utf-8")
        #: Hand-offs made now are sent when the caller is done (a pass of
        #: the accept loop, an answer), not in a turn of the reactor.
        self._batching = False
        self._port = listenForHandOff(reactor, spec, self._connectionAccepted, adopted, self._acceptedSome)
        self.sockname = socknameOf(self._port.socket, spec)

    def fileno(self) -> int:
        """
        The listening socket's descriptor.
        """
        fd: int = self._port.fileno()
        return fd

    def holdBacklog(self) -> None:
        """
        Leave new connections in the kernel backlog until L{releaseBacklog},
        while those accepted already still go to workers (an upgrade).
        """
        self._backlogHeld = True
        self._port.pauseAccepting()

    def releaseBacklog(self) -> None:
        self._backlogHeld = False
        self._afterChange()

    @property
    def scheduler(self) -> HandOffScheduler[HandOffTarget]:
        return self._scheduler

    def answer(self, worker: HandOffTarget) -> dict[str, Any]:
        # Only least-conn needs to hear about connections that end.
        return {"key": self.key, "sockname": self.sockname, "reportClosed": self._leastConnections}

    def add(self, worker: HandOffTarget) -> None:
        """
        C{worker} is listening on this handle: hand it connections.
        """
        self._scheduler.addWorker(worker)

    def retire(self, worker: HandOffTarget) -> None:
        """
        C{worker} closed its server for this handle.
        """
        self._scheduler.retireWorker(worker)

    def remove(self, worker: HandOffTarget) -> None:
        """
        C{worker} is gone; its unacked connections go to other workers.
        """
        self._unanswered.pop(worker, None)
        self._shortSaid.pop(worker, None)
        retry = self._shortOf.pop(worker, None)
        if retry is not None and retry.active():
            retry.cancel()
        self._scheduler.removeWorker(worker)
        self._afterChange()

    def oldestUnanswered(self, worker: HandOffTarget) -> float | None:
        """
        When the oldest hand-off to C{worker} that it has not answered was
        sent (L{None}: none is waiting).
        """
        for sentAt in self._unanswered.get(worker, {}).values():
            return sentAt
        return None

    def connectionsClosed(self, worker: HandOffTarget, count: int) -> None:
        self._scheduler.connectionsClosed(worker, count)
        if isinstance(self._strategy, LeastConnections):
            self._log.debug(
                "worker {workerId} closed {count} connections on {key}; {live} live",
                workerId=worker.id,
                count=count,
                key=self.key,
                live=self._strategy.live(worker),
            )

    def stopAccepting(self) -> Deferred[None]:
        """
        Accept what is already in the kernel backlog (so no client waiting
        there is reset), then close the listening socket.
        """
        self._port.drainBacklog()
        return self._port.stopListening() or succeed(None)

    def closeNow(self) -> None:
        """
        Close the listening socket at once, without waiting for the reactor
        (the master failed to start).
        """
        self._port.connectionLost(Failure(ConnectionDone()))

    def whenIdle(self) -> Deferred[None]:
        """
        Fires once every accepted connection has been taken by a worker.
        """
        if self._scheduler.idle:
            return succeed(None)
        if self._idle is None:
            self._idle = Latch()
        return self._idle.wait()

    def closeWaiting(self) -> None:
        """
        Close the connections no worker took (the master is stopping).
        """
        if self._holdTimer is not None and self._holdTimer.active():
            self._holdTimer.cancel()
        self._holdTimer = None
        self._scheduler.closeAll()

    def statistics(self) -> dict[str, Any]:
        """
        Connections accepted, the hand-off queue (accepted sockets waiting
        for a worker) and its limit, how often a full queue paused
        accepting, C{accept()} failures for lack of descriptors, and the
        kernel's accept queue.
        """
        port = self._port
        return {
            "accepted": port.accepted,
            "handOffQueue": self._scheduler.waiting(),
            "handOffQueueLimit": self._scheduler.queueLimit,
            "backpressurePauses": port.pauses,
            "emfileErrors": port.resourceErrors,
            **_kernelQueue(port.socket),
        }

    def _holdStarted(self) -> None:
        # least-conn waits for room in the emptier worker's window, briefly:
        # a worker that does not answer in time is not waited for.
        if self._holdTimer is None:
            self._holdTimer = self._reactor.callLater(HOLD_LIMIT, self._holdExpired)

    def _holdExpired(self) -> None:
        self._holdTimer = None
        self._scheduler.holdExpired()
        self._afterChange()

    def _connectionAccepted(self, fd: int, address: object) -> None:
        # The accept loop calls _acceptedSome at the end of its pass.
        self._batching = True
        self._scheduler.connectionAccepted(fd)
        if self._scheduler.full:
            self._port.pauseAccepting()

    def _acceptedSome(self) -> None:
        self._batching = False
        self._sendBatches()

    def _handOff(self, worker: HandOffTarget, fd: int) -> None:
        # Everything handed to one worker in one pass of the accept loop, one
        # answer, or else one turn of the reactor, goes in one NewConn box:
        # under load the box's cost is shared by many.
        batch = self._outgoing.get(worker)
        if batch is None:
            batch = self._outgoing[worker] = []
            if self._flushing is None and not self._batching:
                self._flushing = self._reactor.callLater(0, self._flush)
        batch.append(fd)

    def _sendBatches(self) -> None:
        """
        Send what was handed off while batching (unless a turn of the
        reactor will).
        """
        if self._outgoing and self._flushing is None:
            self._flush()

    def _flush(self) -> None:
        self._flushing = None
        outgoing, self._outgoing = self._outgoing, {}
        now = self._reactor.seconds()
        for worker, fds in outgoing.items():
            self._lastBatch = batch = self._lastBatch + 1
            unanswered = self._unanswered.get(worker)
            if unanswered is None:
                unanswered = self._unanswered[worker] = {}
            unanswered[batch] = now
            try:
                # The worker's short path; else (a target without one) AMP's.
                send = getattr(worker, "sendNewConn", None)
                if send is not None:
                    send(self._keyBytes, fds, self._answered, self._failed, worker, fds, batch)
                else:
                    sendThroughCallRemote(
                        worker.callRemote,
                        self._keyBytes,
                        fds,
                        self._answered,
                        self._failed,
                        worker,
                        fds,
                        batch,
                    )
            except Exception:
                # Never into the reactor (the channel just closed, say).
                self._failed(Failure(), worker, fds, batch)

    def _answered(self, answer: dict[str, Any], worker: HandOffTarget, fds: list[int], batch: int) -> None:
        unanswered = self._unanswered.get(worker)
        if unanswered is not None:
            unanswered.pop(batch, None)
        if answer.get("outOfDescriptors"):
            self._outOfDescriptors(answer["accepted"], worker, fds)
            return
        answered = self._scheduler.answered
        # A socket the answer does not cover (a malformed answer) stays in
        # flight: the worker is as good as hung.
        self._batching = True
        try:
            for fd, accepted in zip(fds, answer["accepted"]):
                answered(worker, fd, accepted)
                if accepted:
                    worker.connectionTaken()
                else:
                    worker.connectionsRefused += 1
        finally:
            self._batching = False
        self._sendBatches()
        self._afterChange()

    def _outOfDescriptors(self, accepted: list[bool], worker: HandOffTarget, fds: list[int]) -> None:
        """
        C{worker} could not take some of C{fds} for want of descriptors: leave
        it be for a moment (before the refused ones go back in the queue, so
        that they go to another worker).
        """
        now = self._reactor.seconds()
        if now - self._shortSaid.get(worker, float("-inf")) >= SHORT_SAID_EVERY:
            self._shortSaid[worker] = now
            self._log.info(
                "worker {workerId} is out of descriptors: {key} hands what it cannot take to other workers",
                workerId=worker.id,
                key=self.key,
            )
        if worker in self._shortOf:
            self._shortOf[worker].cancel()
        self._scheduler.pauseWorker(worker)
        self._shortOf[worker] = self._reactor.callLater(OUT_OF_DESCRIPTORS_PAUSE, self._tryAgain, worker)
        answered = self._scheduler.answered
        for fd, taken in zip(fds, accepted):
            answered(worker, fd, taken, retry=True)
            if taken:
                worker.connectionTaken()
            else:
                worker.connectionsRefused += 1
        self._afterChange()

    def _tryAgain(self, worker: HandOffTarget) -> None:
        del self._shortOf[worker]
        self._scheduler.resumeWorker(worker)
        self._afterChange()

    def _failed(self, reason: Failure, worker: HandOffTarget, fds: list[int], batch: int) -> None:
        # Every callback on the control channel handles its own errors: one
        # escaping here would make AMP drop a healthy worker's channel.
        if reason.check(ConnectionDone, ConnectionLost):
            # The sockets stay the worker's until its process has exited.
            return
        # An error answer (a worker that should not give one): the sockets
        # stay in flight, unanswered, until the worker is gone.
        self._log.warn(
            "worker {workerId} answered a hand-off with an error: {error}",
            workerId=worker.id,
            error=f"{type(reason.value).__name__}: {reason.getErrorMessage()}",
        )

    def _afterChange(self) -> None:
        if not self._scheduler.full and not self._backlogHeld:
            self._port.resumeAccepting()
        if self._idle is not None and self._scheduler.idle:
            idle, self._idle = self._idle, None
            idle.fire(None)


def _kernelQueue(sock: Any) -> dict[str, int | None]:
    queue = acceptQueue(sock) if sock is not None else None
    return (
        {"acceptQueue": None, "acceptQueueLimit": None}
        if queue is None
        else {
            "acceptQueue": queue[0],
            "acceptQueueLimit": queue[1],
        }
    )
