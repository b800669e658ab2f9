# -*- test-case-name: tests.test_shutdown, tests.test_cluster -*-
"""
Stopping gracefully, the same way for both faces (C{twist cluster}'s master
on C{TERM}, the API's primary on C{cluster.disconnect()}):

    1. stop accepting: what the kernel already queued is accepted first,
       so no client waiting there is reset;
    2. let every accepted connection reach a worker (up to the shutdown
       timeout), while some worker still serves;
    3. disconnect every worker: each closes its servers, finishes its
       connections and exits (killed after its shutdown timeout);
    4. close what no worker took, and forget the handles (a later listen
       binds afresh).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Protocol

from twisted.internet.defer import Deferred, DeferredList, inlineCallbacks
from twisted.internet.interfaces import IReactorTime

from .handles import Handles


class Leaving(Protocol):
    """
    A worker, as a shutdown needs it.
    """

    def isReady(self) -> bool: ...

    def whenExited(self) -> Deferred[Any]: ...

    def disconnect(self) -> object: ...


@inlineCallbacks
def shutDown(
    handles: Handles, workers: Callable[[], Iterable[Leaving]], clock: IReactorTime, timeout: float
) -> Any:
    """
    Stop serving: see the module's docstring.

    @param workers: The live workers, asked for at each step.
    @param timeout: How long accepted connections may wait for a worker.
    @return: Fires once every worker has exited and every handle is closed.
    """
    accepting = list(handles)
    yield DeferredList([handle.stopAccepting() for handle in accepting])
    if any(worker.isReady() for worker in workers()):
        idle: Deferred[Any] = DeferredList([handle.whenIdle() for handle in accepting], consumeErrors=True)
        idle.addTimeout(timeout, clock)
        yield idle.addErrback(lambda _: None)
    leaving = list(workers())
    exits = [worker.whenExited() for worker in leaving]
    for worker in leaving:
        worker.disconnect()
    yield DeferredList(exits)
    for handle in accepting:
        handle.closeWaiting()
        handles.discard(handle)
