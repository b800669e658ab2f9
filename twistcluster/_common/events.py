# -*- test-case-name: tests.test_events -*-
"""
Node's event emitters, for the cluster API: C{on}, C{once}, C{off} and
C{emit}, and L{Latch}, the Deferred form of an event that happens once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

T = TypeVar("T")
Handler = Callable[..., object]


class EventEmitter:
    """
    Named events with handlers, as Node's C{EventEmitter}.

    A handler that raises is logged and the others still run: the events are
    emitted from the control channel, which one bad handler must not break.
    """

    _log = Logger()
    _listeners: dict[str, list[tuple[Handler, bool]]]

    def _handlers(self) -> dict[str, list[tuple[Handler, bool]]]:
        # Created on first use, so subclasses need not call an __init__.
        try:
            return self._listeners
        except AttributeError:
            self._listeners = {}
            return self._listeners

    def on(self, name: str, handler: Handler) -> Any:
        """
        Call C{handler} each time C{name} is emitted.

        @return: C{self}, so calls chain as in Node.
        """
        self._handlers().setdefault(name, []).append((handler, False))
        return self

    addListener = on

    def once(self, name: str, handler: Handler) -> Any:
        """
        Call C{handler} the next time C{name} is emitted, and not after.
        """
        self._handlers().setdefault(name, []).append((handler, True))
        return self

    def off(self, name: str, handler: Handler) -> Any:
        """
        Remove the most recently added C{handler} for C{name}.
        """
        handlers = self._handlers().get(name, [])
        for i in range(len(handlers) - 1, -1, -1):
            if handlers[i][0] == handler:
                del handlers[i]
                break
        return self

    removeListener = off

    def removeAllListeners(self, name: str | None = None) -> Any:
        if name is None:
            self._handlers().clear()
        else:
            self._handlers().pop(name, None)
        return self

    def listenerCount(self, name: str) -> int:
        return len(self._handlers().get(name, []))

    def emit(self, name: str, *args: Any) -> bool:
        """
        Call every handler of C{name} with C{args}, in the order they were
        added.

        @return: Whether there were handlers.
        """
        handlers = self._handlers().get(name)
        if not handlers:
            return False
        current = list(handlers)
        handlers[:] = [entry for entry in handlers if not entry[1]]
        for handler, _ in current:
            try:
                handler(*args)
            except Exception:
                self._log.failure("a {event!r} handler of {emitter!r} failed", event=name, emitter=self)
        return True


class Latch(Generic[T]):
    """
    Something that happens once (a worker comes online, exits, ...): any
    number of Deferreds wait for it, before or after it happened.
    """

    def __init__(self) -> None:
        self._outcome: tuple[bool, Any] | None = None
        self._waiters: list[Deferred[T]] = []

    @property
    def done(self) -> bool:
        return self._outcome is not None

    def wait(self) -> Deferred[T]:
        """
        @return: Fires with the value, or fails with the reason, once settled.
        """
        if self._outcome is None:
            waiter: Deferred[T] = Deferred()
            self._waiters.append(waiter)
            return waiter
        ok, value = self._outcome
        return succeed(value) if ok else fail(value())

    def fire(self, value: T) -> None:
        self._settle(True, value)

    def fail(self, makeError: Callable[[], BaseException]) -> None:
        """
        Fail the waiters with C{makeError()}: made per waiter, so nobody
        waiting means no unhandled error is ever logged.
        """
        self._settle(False, makeError)

    def _settle(self, ok: bool, value: Any) -> None:
        if self._outcome is not None:
            return
        self._outcome = (ok, value)
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if ok:
                waiter.callback(value)
            else:
                waiter.errback(Failure(value()))
