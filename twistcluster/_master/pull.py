# -*- test-case-name: tests.test_ctl -*-
"""
Asking every worker something at once, for an operator, within a bound: a
worker that does not answer in time (blocked, stopped, dying) is left out,
and never holds up the answer about the others.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Protocol, TypeVar

from twisted.internet.defer import Deferred, DeferredList, fail
from twisted.internet.interfaces import IReactorTime
from twisted.protocols import amp
from twisted.python.failure import Failure


class Asked(Protocol):
    def callRemote(self, command: type[amp.Command], **arguments: Any) -> Deferred[Any]: ...


A = TypeVar("A", bound=Asked)


def askEach(
    clock: IReactorTime,
    workers: Iterable[A],
    command: type[amp.Command],
    timeout: float,
    **arguments: Any,
) -> Deferred[Sequence[tuple[A, dict[str, Any] | Failure]]]:
    """
    Send C{command} to each worker at once.

    @return: Fires, at the latest C{timeout} seconds later, with each worker
        and its answer, or the L{Failure} it gave (a timeout, a lost
        channel, an error of its own).  Never fails.
    """
    asked = list(workers)
    calls = []
    for worker in asked:
        try:
            call = worker.callRemote(command, **arguments)
        except Exception:
            call = fail()
        # An AMP call has no canceller: the timeout fails it, and the late
        # answer is ignored when it comes.
        calls.append(call.addTimeout(timeout, clock))
    answered: Deferred[Any] = DeferredList(calls, consumeErrors=True)
    return answered.addCallback(lambda results: [(w, r) for w, (ok, r) in zip(asked, results)])
