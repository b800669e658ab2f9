# -*- test-case-name: tests.test_scheduling -*-
"""
Which worker gets the next accepted connection.

L{HandOffScheduler} is Node's C{RoundRobinHandle} logic without the I/O: a
FIFO of workers with room, a queue of accepted sockets, and an ack window.
It works on plain file descriptor numbers; the caller does the sending.
Which of the workers with room gets the next socket is its
L{PickStrategy <twistcluster._master.picking.PickStrategy>}
(C{_master/picking.py}).
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable
from typing import Generic

from attrs import define, field
from twisted.logger import Logger

from .picking import PickStrategy, RoundRobin, W


@define
class HandOffScheduler(Generic[W]):
    """
    Hand accepted sockets to workers, at most C{window} unacked hand-offs per
    worker; the pick strategy chooses among the workers with room.

    A worker whose window is full (busy, blocked, dying) gets nothing more
    until it acks.  A refused hand-off goes to another worker; a worker that
    dies with hand-offs in flight gives them back, and they go to another
    worker.  The master closes its copy of a socket only once a worker has
    accepted it.

    @ivar _handOff: Sends one socket to one worker; its answer must come back
        through L{answered}.
    @ivar _close: Closes a socket the master no longer needs (a plain
        C{close()}, never a C{shutdown()}).
    @ivar strategy: Which worker with room gets the next socket.
    @ivar window: The most unacked hand-offs one worker may have.
    @ivar queueLimit: How many accepted sockets may wait for a worker before
        L{full} says to stop accepting.
    @ivar holdStarted: Called when the next socket waits for room in a
        worker's window (L{PickStrategy.wouldRather}); the caller bounds the
        wait with L{holdExpired}.
    """

    _handOff: Callable[[W, int], object]
    _close: Callable[[int], object] = os.close
    strategy: PickStrategy[W] = field(factory=RoundRobin)
    window: int = 16
    queueLimit: int = 64
    _queue: deque[int] = field(factory=deque, init=False)
    _ready: deque[W] = field(factory=deque, init=False)
    _inFlight: dict[W, set[int]] = field(factory=dict, init=False)
    _retired: set[W] = field(factory=set, init=False)
    _paused: set[W] = field(factory=set, init=False)
    _refusals: dict[int, int] = field(factory=dict, init=False)
    _dispatching: bool = field(default=False, init=False)
    holdStarted: Callable[[], object] = lambda: None
    #: The worker whose window the queue waits for, if any.
    _holdingFor: W | None = field(default=None, init=False)
    #: Workers that did not make room in time: not waited for until they
    #: answer.
    _stalled: set[W] = field(factory=set, init=False)
    _log = Logger()

    @property
    def full(self) -> bool:
        """
        Are so many sockets waiting that the master should stop accepting?
        """
        return len(self._queue) >= self.queueLimit

    @property
    def idle(self) -> bool:
        """
        Is every accepted socket answered for: none queued, none in flight?
        """
        return not self._queue and not any(self._inFlight.values())

    @property
    def workers(self) -> list[W]:
        """
        The workers that may be handed new connections.
        """
        return [w for w in self._inFlight if w not in self._retired]

    def waiting(self) -> int:
        return len(self._queue)

    def inFlight(self, worker: W) -> int:
        return len(self._inFlight.get(worker, ()))

    def addWorker(self, worker: W) -> None:
        """
        C{worker} is listening: it takes its turn from now on.
        """
        if worker in self._retired:
            # It closed and listens again while answers are still due.
            self._retired.discard(worker)
            if len(self._inFlight[worker]) < self.window and worker not in self._paused:
                self._ready.append(worker)
        elif worker in self._inFlight:
            return
        else:
            self._inFlight[worker] = set()
            self._ready.append(worker)
        self.dispatch()

    def retireWorker(self, worker: W) -> None:
        """
        C{worker} stopped serving: it gets nothing new, and its hand-offs
        still in flight will be answered (refused) as usual.
        """
        if worker not in self._inFlight or worker in self._retired:
            return
        self._retired.add(worker)
        self._dropFromReady(worker)
        self._forgetIfDone(worker)

    def pauseWorker(self, worker: W) -> None:
        """
        Hand C{worker} nothing new until L{resumeWorker} (it is out of
        descriptors); what it has in flight is still answered as usual.
        """
        if worker in self._inFlight:
            self._paused.add(worker)
            self._dropFromReady(worker)

    def resumeWorker(self, worker: W) -> None:
        """
        C{worker} takes its turn again (if it still serves).
        """
        if worker not in self._paused:
            return
        self._paused.discard(worker)
        unacked = self._inFlight.get(worker)
        if unacked is not None and worker not in self._retired and len(unacked) < self.window:
            self._ready.append(worker)
        self.dispatch()

    def removeWorker(self, worker: W) -> None:
        """
        C{worker} is gone: the sockets it never acked go to other workers
        first, ahead of newer ones.
        """
        unacked = self._inFlight.pop(worker, set())
        self._retired.discard(worker)
        self._stalled.discard(worker)
        self._paused.discard(worker)
        self._dropFromReady(worker)
        self.strategy.forget(worker)
        self._queue.extendleft(sorted(unacked, reverse=True))
        if unacked:
            self._log.info("{count} hand-offs in flight to a lost worker go to others", count=len(unacked))
        self.dispatch()

    def connectionAccepted(self, fd: int) -> None:
        self._queue.append(fd)
        self.dispatch()

    def answered(self, worker: W, fd: int, accepted: bool, retry: bool = False) -> None:
        """
        C{worker} answered the hand-off of C{fd}.  A stale answer (from a
        worker already removed, whose sockets went elsewhere) is ignored.

        @param retry: A refusal that says nothing of the socket (the worker
            could not take it for want of descriptors): it goes back to the
            head of the queue without counting as a refusal.
        """
        unacked = self._inFlight.get(worker)
        if unacked is None or fd not in unacked:
            return
        self._stalled.discard(worker)
        wasFull = len(unacked) >= self.window
        unacked.remove(fd)
        if accepted:
            self._refusals.pop(fd, None)
            self._close(fd)
        else:
            self.strategy.refused(worker)
            if retry:
                self._queue.appendleft(fd)
            else:
                self._refused(fd)
        if worker in self._retired:
            self._forgetIfDone(worker)
        elif wasFull and not (self._paused and worker in self._paused):
            self._ready.append(worker)
        self.dispatch()

    def connectionsClosed(self, worker: W, count: int) -> None:
        """
        C{count} connections handed to C{worker} have ended.
        """
        self.strategy.closed(worker, count)

    def closeAll(self) -> None:
        """
        Close every socket still waiting for a worker (the master is stopping
        and no worker is left to serve them).
        """
        while self._queue:
            fd = self._queue.popleft()
            self._refusals.pop(fd, None)
            self._close(fd)

    def dispatch(self) -> None:
        if self._dispatching:
            # A hand-off that failed at once re-entered us; the loop below
            # sees whatever it changed.
            return
        self._dispatching = True
        heldFor, self._holdingFor = self._holdingFor, None
        try:
            while self._queue and self._ready:
                worker = self.strategy.pick(self._ready, self._inFlight)
                if self.strategy.waitsForRoom and self._waitForRoom(worker):
                    self._ready.appendleft(worker)
                    if heldFor is None:
                        self.holdStarted()
                    return
                fd = self._queue.popleft()
                self.strategy.handedOff(worker)
                unacked = self._inFlight[worker]
                unacked.add(fd)
                if len(unacked) < self.window:
                    self._ready.append(worker)
                self._handOff(worker, fd)
        finally:
            self._dispatching = False

    @property
    def holding(self) -> bool:
        """
        Is the queue waiting for room in a worker's window?
        """
        return self._holdingFor is not None

    def holdExpired(self) -> None:
        """
        The worker the queue waits for did not make room in time: hand the
        queue to the others, and wait for that worker no more until it
        answers.
        """
        if self._holdingFor is not None:
            self._stalled.add(self._holdingFor)
            self.dispatch()

    def _waitForRoom(self, worker: W) -> bool:
        """
        Is there a worker with a full window (not retired, not stalled) that
        the strategy would rather wait for than give C{worker} the next
        socket?
        """
        window, retired, stalled = self.window, self._retired, self._stalled
        wouldRather = self.strategy.wouldRather
        for other, unacked in self._inFlight.items():
            if (
                len(unacked) >= window
                and other not in retired
                and other not in stalled
                and other not in self._paused
                and wouldRather(other, worker)
            ):
                self._holdingFor = other
                return True
        return False

    def _refused(self, fd: int) -> None:
        refusals = self._refusals.get(fd, 0) + 1
        if refusals > len(self._inFlight):
            # Every worker had its chance: do not bounce it around forever.
            self._refusals.pop(fd, None)
            self._log.warn("closing a connection that every worker refused")
            self._close(fd)
            return
        self._refusals[fd] = refusals
        self._queue.appendleft(fd)

    def _dropFromReady(self, worker: W) -> None:
        try:
            self._ready.remove(worker)
        except ValueError:
            pass

    def _forgetIfDone(self, worker: W) -> None:
        if not self._inFlight.get(worker):
            self._inFlight.pop(worker, None)
            self._retired.discard(worker)
            self._paused.discard(worker)
            self.strategy.forget(worker)
