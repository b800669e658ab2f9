# -*- test-case-name: tests.test_handles -*-
"""
The master's listening handles, keyed as Node keys them, and the hand-off of
accepted connections to workers over the control channel.
"""

from __future__ import annotations

import os
import socket
from typing import Any, Callable, Protocol

from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import CannotListenError, ConnectionDone, ConnectionLost
from twisted.logger import Logger
from twisted.python.failure import Failure

from ._endpoints import ListenSpec
from ._ports import listenForHandOff
from ._protocol import ListenRefused, NewConn
from ._scheduling import RoundRobinScheduler


class HandOffTarget(Protocol):
    """
    What a handle needs of a worker: its id (for logs) and its control channel.
    """

    id: int

    def connectionTaken(self) -> None:
        ...

    def callRemote(self, command: type, **kwargs: Any) -> Deferred[dict[str, Any]]:
        ...


def describeAddress(sockname: dict[str, Any]) -> str:
    """
    An address as one token a script can parse: C{tcp:127.0.0.1:8080},
    C{tcp6:[::1]:8080} or C{unix:/run/app.sock}.
    """
    if sockname["addressType"] == -1:
        return f"unix:{sockname['address']}"
    if sockname["addressType"] == 6:
        return f"tcp6:[{sockname['address']}]:{sockname['port']}"
    return f"tcp:{sockname['address']}:{sockname['port']}"


class RoundRobinHandle:
    """
    One listening socket in the master, and the workers that serve it.

    @ivar key: Node's handle key.
    @ivar sockname: The bound address, as Node reports it: C{address},
        C{port}, C{addressType} (4, 6, or -1 for a UNIX socket).
    """

    _log = Logger()

    def __init__(
        self,
        reactor: Any,
        key: str,
        spec: ListenSpec,
        close: Callable[[int], object] = os.close,
    ) -> None:
        self.key = key
        self.spec = spec
        self._reactor = reactor
        self._idleWaiters: list[Deferred[None]] = []
        self._outgoing: dict[HandOffTarget, list[int]] = {}
        self._flushing: Any = None
        self._scheduler: RoundRobinScheduler[HandOffTarget] = RoundRobinScheduler(
            self._handOff, close
        )
        self._port = listenForHandOff(reactor, spec, self._connectionAccepted)
        self.sockname = self._sockname()

    def _sockname(self) -> dict[str, Any]:
        name = self._port.socket.getsockname()  # type: ignore[attr-defined]
        if self.spec.family == socket.AF_UNIX:
            return {"address": os.fsdecode(name), "port": -1, "addressType": -1}
        return {"address": name[0], "port": name[1], "addressType": self.spec.addressType}

    @property
    def scheduler(self) -> RoundRobinScheduler[HandOffTarget]:
        return self._scheduler

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

    def stopAccepting(self) -> Deferred[None]:
        """
        Accept what is already in the kernel backlog (so no client waiting
        there is reset), then close the listening socket.
        """
        self._port.drainBacklog()  # type: ignore[attr-defined]
        return self._port.stopListening() or succeed(None)  # type: ignore[return-value]

    def closeNow(self) -> None:
        """
        Close the listening socket at once, without waiting for the reactor
        (the master failed to start).
        """
        self._port.connectionLost(Failure(ConnectionDone()))  # type: ignore[attr-defined]

    def whenIdle(self) -> Deferred[None]:
        """
        Fires once every accepted connection has been taken by a worker.
        """
        if self._scheduler.idle:
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        self._idleWaiters.append(waiter)
        return waiter

    def closeWaiting(self) -> None:
        """
        Close the connections no worker took (the master is stopping).
        """
        self._scheduler.closeAll()

    def _connectionAccepted(self, fd: int) -> None:
        self._scheduler.connectionAccepted(fd)
        if self._scheduler.full:
            self._port.pauseAccepting()  # type: ignore[attr-defined]

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
            self._port.resumeAccepting()  # type: ignore[attr-defined]
        if self._idleWaiters and self._scheduler.idle:
            waiters, self._idleWaiters = self._idleWaiters, []
            for waiter in waiters:
                waiter.callback(None)


class Handles:
    """
    Every listening handle of the master, by key.

    @ivar _granted: The listens this master was configured with; a worker's
        query for anything else is refused.  L{None} grants any.
    """

    _log = Logger()

    def __init__(self, reactor: Any, granted: list[ListenSpec] | None = None) -> None:
        self._reactor = reactor
        self._granted = granted
        self._byKey: dict[str, RoundRobinHandle] = {}

    def __iter__(self) -> Any:
        return iter(list(self._byKey.values()))

    def get(self, key: str) -> RoundRobinHandle | None:
        return self._byKey.get(key)

    def listen(self, spec: ListenSpec, index: int = 0) -> RoundRobinHandle:
        """
        The handle for the C{index}-th listen on C{spec}, created (bound) on
        first use.

        @raise CannotListenError: Binding failed.
        """
        key = spec.key(index)
        handle = self._byKey.get(key)
        if handle is None:
            handle = self._byKey[key] = RoundRobinHandle(self._reactor, key, spec)
            self._log.info(
                "listening on {key} at {address}",
                key=key,
                address=describeAddress(handle.sockname),
            )
        return handle

    def query(self, spec: ListenSpec, index: int) -> RoundRobinHandle:
        """
        Answer a worker's C{QueryServer}.

        @raise ListenRefused: Not granted, or the bind failed.
        """
        if self._granted is not None and not any(spec.grantedBy(g) for g in self._granted):
            raise ListenRefused(f"the master was not configured to listen on {spec.key(index)}")
        try:
            return self.listen(spec, index)
        except CannotListenError as e:
            raise ListenRefused(str(e)) from e

    def workerListening(self, worker: HandOffTarget, key: str) -> bool:
        handle = self._byKey.get(key)
        if handle is None:
            return False
        handle.add(worker)
        return True

    def workerClosed(self, worker: HandOffTarget, key: str) -> None:
        handle = self._byKey.get(key)
        if handle is not None:
            handle.retire(worker)

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

    def servedBy(self, worker: HandOffTarget) -> int:
        return sum(worker in h.scheduler.workers for h in self)
