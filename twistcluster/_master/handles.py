# -*- test-case-name: tests.test_handoff, tests.test_policies -*-
"""
The master's listening handles, keyed as Node keys them: L{HandOffHandle}
accepts connections and hands them to workers over the control channel
(C{rr}, C{least-conn}); the handles of L{twistcluster._master.sharedhandles} give workers
the listening socket itself (C{none}, C{reuseport}, UDP).
"""

from __future__ import annotations

from typing import Any, Protocol

from twisted.internet.defer import Deferred
from twisted.internet.error import CannotListenError
from twisted.logger import Logger

from .._common.endpoints import ListenSpec
from .._common.policies import SchedulingPolicy
from .._common.protocol import ListenRefused
from .._common.reactors import IAcceptingReactor
from .._common.sockets import describeAddress
from .handoff import HandOffHandle, HandOffTarget
from .picking import LeastConnections, PickStrategy, RoundRobin
from .sharedhandles import ReusePortHandle, SharedHandle

__all__ = ["Handle", "HandOffHandle", "HandOffTarget", "Handles"]


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


#: The most listening sockets a master that grants any listen (the API's
#: primary, or a clustered plugin whose endpoints it cannot tell) makes for
#: its workers: Node's index semantics (the n-th listen on one address in
#: each worker shares the n-th socket) up to this many, refused beyond.
MAX_LISTENS = 128


class Handles:
    """
    Every listening handle of the master, by key.

    @ivar _granted: The listens this master was configured with, each at the
        index it was configured with (the n-th listen on one address is
        index n); a worker's query for anything else, another index of a
        configured address included, is refused.  L{None} grants any, up to
        L{maxListens} sockets.
    @ivar policy: The scheduling policy of the stream handles it makes.
    @ivar _closeUnusedHandles: Whether a handle bound for a worker's query
        is closed once the last worker listening on it closes it (the
        command line's master, for a plugin whose endpoints it cannot tell;
        the API's primary closes its handles when no worker is left).
    """

    _log = Logger()

    def __init__(
        self,
        reactor: IAcceptingReactor,
        granted: list[ListenSpec] | None = None,
        policy: SchedulingPolicy = SchedulingPolicy.RR,
        closeUnused: bool = False,
        maxListens: int = MAX_LISTENS,
    ) -> None:
        self._reactor = reactor
        self._granted = granted
        self.policy = policy
        self._closeUnusedHandles = closeUnused
        self.maxListens = maxListens
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
            # The service logs the user's words (a command-line master's
            # "listening on tcp:8080 at ..."); the key is for debugging.
            self._log.debug(
                "listening on {key} at {address}",
                key=key,
                address=describeAddress(spec, handle.sockname),
            )
        return handle

    def _makeHandle(self, key: str, spec: ListenSpec, adopted: int | None = None) -> Handle:
        if spec.kind == "udp":
            # Each datagram reaches one reader: the kernel already spreads them.
            return SharedHandle(key, spec, adopted=adopted)
        if self.policy.handsOff:
            strategy: PickStrategy[HandOffTarget] = (
                LeastConnections() if self.policy is SchedulingPolicy.LEAST_CONN else RoundRobin()
            )
            return HandOffHandle(self._reactor, key, spec, strategy, adopted=adopted)
        if self.policy is SchedulingPolicy.REUSEPORT and spec.kind == "tcp" and spec.fd < 0:
            return ReusePortHandle(key, spec, presized=self.reusePortSockets, adopted=adopted)
        # none; and reuseport where the kernel has no SO_REUSEPORT group to
        # offer (UNIX sockets) or the socket is not ours to multiply (systemd).
        return SharedHandle(key, spec, adopted=adopted)

    def adopt(
        self, key: str, spec: ListenSpec, fd: int, listening: list[HandOffTarget], onDemand: bool
    ) -> Handle:
        """
        Serve the listening socket C{fd} that an earlier image of the master
        bound for C{key} (an upgrade), with the workers C{listening} on it.
        """
        handle = self._byKey[key] = self._makeHandle(key, spec, adopted=fd)
        if listening:
            self._listening[key] = set(listening)
        if onDemand:
            self._onDemand.add(key)
        return handle

    def listeningOn(self, key: str) -> set[HandOffTarget]:
        """
        The workers listening on C{key} (leaving ones included).
        """
        return set(self._listening.get(key, ()))

    def isOnDemand(self, key: str) -> bool:
        return key in self._onDemand

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
        that grants C{spec} at C{index}, or (granting any) the handle for it,
        bound on first use.

        @raise ListenRefused: Not granted, or the bind failed.
        """
        if self._granted is not None:
            return self._configuredHandle(spec, index)
        key = spec.key(index)
        if key not in self._byKey and len(self._byKey) >= self.maxListens:
            raise ListenRefused(
                f"the master already listens on {len(self._byKey)} sockets for its workers,"
                f" the most it will ({self.maxListens})"
            )
        try:
            handle = self.listen(spec, index)
        except (CannotListenError, OSError, OverflowError, ValueError) as e:
            raise ListenRefused(str(e)) from e
        if self._closeUnusedHandles:
            self._onDemand.add(handle.key)
        return handle

    def _configuredHandle(self, spec: ListenSpec, index: int) -> Handle:
        assert self._granted is not None
        configured = [c for c in self._granted if spec.grantedBy(c)]
        if not configured:
            raise ListenRefused(f"the master was not configured to listen on {spec.key(index)}")
        handle = self._byKey.get(configured[0].key(index))
        if handle is None:
            first = self._byKey.get(configured[0].key(0))
            where = describeAddress(configured[0], first.sockname) if first is not None else spec.key(0)
            times = "once" if len(configured) == 1 else f"{len(configured)} times"
            raise ListenRefused(
                f"listen number {index + 1} on {where} is not granted:"
                f" the master was configured to listen there {times}"
            )
        return handle

    def oldestUnanswered(self, worker: HandOffTarget) -> float | None:
        """
        When the oldest hand-off C{worker} has not answered was sent, on any
        handle (L{None}: none).
        """
        times = [
            sentAt
            for handle in self._byKey.values()
            if isinstance(handle, HandOffHandle) and (sentAt := handle.oldestUnanswered(worker)) is not None
        ]
        return min(times, default=None)

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
