# -*- test-case-name: tests.test_master -*-
"""
The master: it owns the listening sockets and the worker processes, and it
answers the signals users send it.
"""

from __future__ import annotations

import signal
from collections import Counter
from typing import Any, Sequence

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList, inlineCallbacks
from twisted.internet.error import CannotListenError
from twisted.logger import Logger

from ._endpoints import ListenSpec
from ._handles import Handles
from ._policies import SchedulingPolicy
from ._pool import WorkerPool
from ._sockets import describeAddress


class StartupError(Exception):
    """
    The master cannot start; the message says why, in one line.
    """


class Master(Service):
    """
    The cluster's master process.

    @ivar handles: The listening sockets, by Node's key.
    @ivar pool: The worker processes.
    """

    _log = Logger()
    name = "master"

    def __init__(
        self,
        reactor: Any,
        listens: Sequence[tuple[str, ListenSpec]],
        workerArguments: Sequence[str],
        workers: int,
        shutdownTimeout: float,
        policy: SchedulingPolicy = SchedulingPolicy.RR,
    ) -> None:
        self._reactor = reactor
        self._listens = list(listens)
        self._shutdownTimeout = shutdownTimeout
        self.handles = Handles(reactor, [spec for _, spec in self._listens], policy)
        self.pool = WorkerPool(reactor, self.handles, workerArguments, workers, shutdownTimeout)
        self._stopping = False

    def startService(self) -> None:
        """
        Bind every configured endpoint now, so a bad address fails the start
        before any worker exists; spawn the workers once the reactor runs.

        @raise StartupError: An endpoint could not be bound.
        """
        self._bindAll()
        super().startService()
        self._reactor.callWhenRunning(self._running)

    def _bindAll(self) -> None:
        bound = []
        # As in a worker (Node's index): the n-th listen on one address gets
        # index n, so two `--listen tcp:0` are two sockets on two ports.
        indexes: Counter[str] = Counter()
        for description, spec in self._listens:
            index = indexes[spec.key(0)]
            indexes[spec.key(0)] += 1
            try:
                handle = self.handles.listen(spec, index)
            except CannotListenError as e:
                for earlier in bound:
                    earlier.closeNow()
                reason = e.socketError
                text = getattr(reason, "strerror", None) or str(reason)
                raise StartupError(f"cannot listen on {description!r}: {text}") from e
            bound.append(handle)
            self._log.info(
                "listening on {description} at {address} (scheduling {scheduling})",
                description=description,
                address=describeAddress(spec, handle.sockname),
                scheduling=handle.scheduling,
            )

    def _running(self) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._signalled)
        self.pool.start()

    def _signalled(self, signum: int, frame: Any) -> None:
        self._reactor.callFromThread(self._stopRequested, signal.Signals(signum).name)

    def _stopRequested(self, signame: str) -> None:
        if not self._stopping:
            self._log.info("{signal}: stopping gracefully", signal=signame)
            self._reactor.stop()
        else:
            self._log.warn("{signal} again: killing the workers now", signal=signame)
            self.pool.killAll()

    @inlineCallbacks
    def stopService(self) -> Any:
        """
        Stop accepting, let queued connections reach a worker, then let every
        worker finish its connections (up to the shutdown timeout).
        """
        self._stopping = True
        super().stopService()
        self._log.info(
            "no longer accepting; workers finish their connections (up to {timeout}s)",
            timeout=self._shutdownTimeout,
        )
        yield DeferredList([handle.stopAccepting() for handle in self.handles])
        if self.pool.readyCount:
            idle: Deferred[Any] = DeferredList([handle.whenIdle() for handle in self.handles])
            idle.addTimeout(self._shutdownTimeout, self._reactor)
            yield idle.addErrback(lambda _: None)
        yield self.pool.stop()
        for handle in self.handles:
            handle.closeWaiting()
        self._log.info("stopped")
