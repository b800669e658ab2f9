# -*- test-case-name: tests.test_startup, tests.test_bad_input -*-
"""
When a command-line worker is ready: once every listen it was asked for
(C{--listen}), or its plugin made while starting (C{twist cluster -- dns}),
is granted and listening.  Until then the master hears of none of them, so
a worker whose own bind fails (C{dns} with its TCP port taken, its UDP one
free) exits as a boot failure, never ready, instead of crashing after it
was, again and again.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Generic, Protocol, TypeVar

from twisted.internet.defer import Deferred, FirstError, gatherResults
from twisted.python.failure import Failure


class StartupListen(Protocol):
    @property
    def closed(self) -> bool: ...

    def whenListening(self) -> Deferred[Any]: ...


P = TypeVar("P", bound=StartupListen)


class Startup(Generic[P]):
    """
    A command-line worker's start.

    @ivar _held: The listens granted while starting, not yet announced.
    @ivar _phase: C{"starting"}, C{"started"}, or C{"failed"} (its listens
        are never announced: the worker ends).
    @ivar _refusal: The first listen the master refused while starting.
    """

    def __init__(self, announce: Callable[[P], object], failed: Callable[[Failure], object]) -> None:
        self._announce = announce
        self._failed = failed
        self._held: list[P] = []
        self._phase = "starting"
        self._refusal: Failure | None = None

    def granted(self, port: P) -> bool:
        """
        C{port} is listening.

        @return: Whether its announcement waits for the start to finish (or
            never comes, the start having failed).
        """
        if self._phase == "started":
            return False
        self._held.append(port)
        return True

    def refused(self, reason: Failure) -> bool:
        """
        The master refused a listen.

        @return: Whether it is the start's failure (said once every listen
            was asked for).
        """
        if self._phase == "started":
            return False
        if self._refusal is None:
            self._refusal = reason
        return True

    def finish(self, ports: Sequence[P]) -> None:
        """
        Every listen of the start was asked for (C{ports}): announce them all
        once each is listening; if one was refused, the start failed.
        """
        if self._refusal is not None:
            self._failedToStart(self._refusal)
            return
        waiting = gatherResults([port.whenListening() for port in ports], consumeErrors=True)
        waiting.addCallbacks(self._started, self._failedToStart)

    def _failedToStart(self, reason: Failure) -> None:
        if isinstance(reason.value, FirstError):
            reason = reason.value.subFailure
        if self._phase == "starting":
            self._phase = "failed"
            self._failed(reason)

    def _started(self, result: object) -> None:
        if self._phase != "starting":
            return
        self._phase = "started"
        held, self._held = self._held, []
        for port in held:
            if not port.closed:
                self._announce(port)
