# -*- test-case-name: tests.test_handoff, tests.test_policies -*-
"""
The master's listening handles, keyed as Node keys them: L{HandOffHandle}
accepts connections and hands them to workers over the control channel
(C{rr}, C{least-conn}); the handles of L{twistcluster._master.sharedhandles} give workers
the listening socket itself (C{none}, C{reuseport}, UDP).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, Protocol, cast

from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import CannotListenError, ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IDelayedCall, IReactorFDSet, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from .._common.endpoints import ListenSpec
from .._common.events import Latch
from .._common.policies import SchedulingPolicy
from .._common.ports import listenForHandOff
from .._common.protocol import ListenRefused, NewConn
from .._common.sockets import acceptQueue, describeAddress, socknameOf
from .scheduling import HandOffScheduler, LeastConnections, PickStrategy, RoundRobin
from .sharedhandles import ReusePortHandle, SharedHandle

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

    def __hash__(self) -> int: ...

    def connectionTaken(self) -> None: ...

    def callRemote(self, command: type, **kwargs: Any) -> Deferred[dict[str, Any]]: ...


class Handle(Protocol):
    """
    One listening socket of the master (or one per worker, for
    C{reuseport}), and the workers that serve it.

    @ivar key: Node's handle key.
    @ivar sockname: The bound address, as Node reports it: C{address},
        C{port}, C{addressType} (4, 6, or -1 for a UNIX socket).
    @ivar scheduling: The policy it follows, by its option name.
    """

    key: str
    spec: ListenSpec
    sockname: dict[str, Any]
    scheduling: str

    def answer(self, worker: HandOffTarget) -> dict[str, Any]:
        """
        The answer to C{worker}'s C{QueryServer} for this handle.
        """

    def add(self, worker: HandOffTarget) -> None:
        """
        C{worker} is listening on this handle.
        """

    def retire(self, worker: HandOffTarget) -> None:
        """
        C{worker} closed its server for this handle.
        """

    def remove(self, worker: HandOffTarget) -> None:
        """
        C{worker} is gone.
        """

    def connectionsClosed(self, worker: HandOffTarget, count: int) -> None:
        """
        C{count} connections C{worker} served on this handle have ended.
        """

    def stopAccepting(self) -> Deferred[None]:
        """
        Close the master's listening socket, letting no waiting client down
        where it can.
        """

    def closeNow(self) -> None:
        """
        Close at once (the master failed to start).
        """

    def whenIdle(self) -> Deferred[None]:
        """
        Fires once every connection the master accepted is with a worker.
        """

    def closeWaiting(self) -> None:
        """
        Close whatever the master still holds (it is stopping).
        """

    def statistics(self) -> dict[str, Any]:
        """
        What an operator sees of it (C{twistcluster status}): counts since
        the start, read now.
        """


class HandOffHandle:
    """
    A listening socket in the master that accepts connections and hands each
    one to a worker, as its pick strategy chooses.
    """

    _log = Logger()

    def __init__(
        self,
        reactor: IReactorTime,
        key: str,
        spec: ListenSpec,
        strategy: PickStrategy[HandOffTarget] | None = None,
        close: Callable[[int], object] = os.close,
    ) -> None:
        self.key = key
        self.spec = spec
        self._reactor = reactor
        self._strategy: PickStrategy[HandOffTarget] = strategy if strategy is not None else RoundRobin()
        self._leastConnections = isinstance(self._strategy, LeastConnections)
        self.scheduling = "least-conn" if self._leastConnections else "rr"
        self._idle: Latch[None] | None = None
        self._outgoing: dict[HandOffTarget, list[int]] = {}
        self._flushing: IDelayedCall | None = None
        self._scheduler: HandOffScheduler[HandOffTarget] = HandOffScheduler(
            self._handOff, close, self._strategy, holdStarted=self._holdStarted
        )
        self._holdTimer: IDelayedCall | None = None
        # A reactor with a clock runs descriptors too.
        self._port = listenForHandOff(cast(IReactorFDSet, reactor), spec, self._connectionAccepted)
        self.sockname = socknameOf(self._port.socket, spec)

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
        self._scheduler.removeWorker(worker)
        self._afterChange()

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
        port: Any = self._port
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
        self._scheduler.connectionAccepted(fd)
        if self._scheduler.full:
            self._port.pauseAccepting()

    def _handOff(self, worker: HandOffTarget, fd: int) -> None:
        # Everything handed to one worker in this turn of the reactor goes in
        # one NewConn box: under load the box's cost is shared by many.
        batch = self._outgoing.get(worker)
        if batch is None:
            batch = self._outgoing[worker] = []
            if self._flushing is None:
                self._flushing = self._reactor.callLater(0, self._flush)
        batch.append(fd)

    def _flush(self) -> None:
        self._flushing = None
        outgoing, self._outgoing = self._outgoing, {}
        for worker, fds in outgoing.items():
            try:
                d = worker.callRemote(NewConn, key=self.key, fds=fds)
            except Exception:
                # Never into the reactor: the sockets go to another worker.
                self._failed(Failure(), worker, fds)
                continue
            d.addCallbacks(
                self._answered,
                self._failed,
                callbackArgs=(worker, fds),
                errbackArgs=(worker, fds),
            )

    def _answered(self, answer: dict[str, Any], worker: HandOffTarget, fds: list[int]) -> None:
        answered = self._scheduler.answered
        for fd, accepted in zip(fds, answer["accepted"]):
            answered(worker, fd, accepted)
            if accepted:
                worker.connectionTaken()
            else:
                worker.connectionsRefused += 1
        self._afterChange()

    def _failed(self, reason: Failure, worker: HandOffTarget, fds: list[int]) -> None:
        # Every callback on the control channel handles its own errors: one
        # escaping here would make AMP drop a healthy worker's channel.
        if not reason.check(ConnectionDone, ConnectionLost):
            self._log.failure(
                "hand-off to worker {workerId} failed; giving its connections to others",
                reason,
                workerId=worker.id,
            )
        for fd in fds:
            self._scheduler.answered(worker, fd, False)
        self._afterChange()

    def _afterChange(self) -> None:
        if not self._scheduler.full:
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


class Handles:
    """
    Every listening handle of the master, by key.

    @ivar _granted: The listens this master was configured with; a worker's
        query for anything else is refused.  L{None} grants any.
    @ivar policy: The scheduling policy of the stream handles it makes.
    @ivar _closeUnusedHandles: Whether a handle bound for a worker's query
        is closed once the last worker listening on it closes it (the
        command line's master, for a plugin whose endpoints it cannot tell;
        the API's primary closes its handles when no worker is left).
    """

    _log = Logger()

    def __init__(
        self,
        reactor: IReactorTime,
        granted: list[ListenSpec] | None = None,
        policy: SchedulingPolicy = SchedulingPolicy.RR,
        closeUnused: bool = False,
    ) -> None:
        self._reactor = reactor
        self._granted = granted
        self.policy = policy
        self._closeUnusedHandles = closeUnused
        self._byKey: dict[str, Handle] = {}
        #: Keys bound for a worker's query (not configured): closed when
        #: their last worker closes them (if C{closeUnused}).
        self._onDemand: set[str] = set()
        self._listening: dict[str, set[HandOffTarget]] = {}
        #: Under reuseport, the listening sockets each reuseport handle binds
        #: up front (one per configured worker) for a master that drops its
        #: privileges; L{None}: one bound for each worker as it asks.
        self.reusePortSockets: int | None = None

    def __iter__(self) -> Any:
        return iter(list(self._byKey.values()))

    def get(self, key: str) -> Handle | None:
        return self._byKey.get(key)

    def listen(self, spec: ListenSpec, index: int = 0) -> Handle:
        """
        The handle for the C{index}-th listen on C{spec}, created (bound) on
        first use.

        @raise CannotListenError: Binding failed.
        """
        key = spec.key(index)
        handle = self._byKey.get(key)
        if handle is None:
            handle = self._byKey[key] = self._makeHandle(key, spec)
            self._log.info(
                "listening on {key} at {address}",
                key=key,
                address=describeAddress(spec, handle.sockname),
            )
        return handle

    def _makeHandle(self, key: str, spec: ListenSpec) -> Handle:
        if spec.kind == "udp":
            # Each datagram reaches one reader: the kernel already spreads them.
            return SharedHandle(key, spec)
        if self.policy.handsOff:
            strategy: PickStrategy[HandOffTarget] = (
                LeastConnections() if self.policy is SchedulingPolicy.LEAST_CONN else RoundRobin()
            )
            return HandOffHandle(self._reactor, key, spec, strategy)
        if self.policy is SchedulingPolicy.REUSEPORT and spec.kind == "tcp" and spec.fd < 0:
            return ReusePortHandle(key, spec, presized=self.reusePortSockets)
        # none; and reuseport where the kernel has no SO_REUSEPORT group to
        # offer (UNIX sockets) or the socket is not ours to multiply (systemd).
        return SharedHandle(key, spec)

    def discard(self, handle: Handle) -> None:
        """
        Forget C{handle} (its owner closes it); a later query for its key
        binds afresh.
        """
        if self._byKey.get(handle.key) is handle:
            del self._byKey[handle.key]

    def query(self, spec: ListenSpec, index: int) -> Handle:
        """
        Answer a worker's C{QueryServer}: the handle of the configured listen
        that grants C{spec}.

        @raise ListenRefused: Not granted, or the bind failed.
        """
        configured = self._configuredFor(spec, index)
        try:
            handle = self.listen(configured, index)
        except CannotListenError as e:
            raise ListenRefused(str(e)) from e
        if self._granted is None and self._closeUnusedHandles:
            self._onDemand.add(handle.key)
        return handle

    def _configuredFor(self, spec: ListenSpec, index: int) -> ListenSpec:
        if self._granted is None:
            return spec
        for configured in self._granted:
            if spec.grantedBy(configured):
                if configured.fd >= 0 and index > 0:
                    raise ListenRefused(f"the inherited socket {spec.key(0)} serves one listen per worker")
                return configured
        raise ListenRefused(f"the master was not configured to listen on {spec.key(index)}")

    def workerListening(self, worker: HandOffTarget, key: str) -> bool:
        handle = self._byKey.get(key)
        if handle is None:
            return False
        handle.add(worker)
        self._listening.setdefault(key, set()).add(worker)
        return True

    def workerClosed(self, worker: HandOffTarget, key: str) -> None:
        handle = self._byKey.get(key)
        if handle is not None:
            handle.retire(worker)
            listening = self._listening.get(key, set())
            listening.discard(worker)
            if not listening and key in self._onDemand:
                self._closeUnused(handle)

    def _closeUnused(self, handle: Handle) -> None:
        """
        Close a handle bound for the workers' queries once the last worker
        listening on it closed it (a worker that dies is replaced, and its
        replacement listens again: that keeps it).
        """
        self._log.info("closing {key}: its last worker closed it", key=handle.key)
        self.discard(handle)
        self._listening.pop(handle.key, None)
        self._onDemand.discard(handle.key)
        handle.stopAccepting().addErrback(
            lambda reason: self._log.failure("closing {key} failed", reason, key=handle.key)
        )
        handle.closeWaiting()

    def workerLeaving(self, worker: HandOffTarget) -> None:
        """
        Hand C{worker} nothing new on any handle; its hand-offs in flight are
        still answered.
        """
        for handle in self:
            handle.retire(worker)

    def workerGone(self, worker: HandOffTarget) -> None:
        for handle in self:
            handle.remove(worker)
        for listening in self._listening.values():
            listening.discard(worker)

    def connectionsClosed(self, worker: HandOffTarget, key: str, count: int) -> None:
        handle = self._byKey.get(key)
        if handle is not None:
            handle.connectionsClosed(worker, count)
