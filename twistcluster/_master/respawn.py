# -*- test-case-name: tests.test_respawn -*-
"""
When to replace a worker that died, and when to give up.

A worker that dies before it is ready (listening) failed to boot; one that
dies later crashed.  Boot failures back off exponentially, and while no
worker has ever been ready they end the master after a few tries: a factory
that cannot start never makes the master spin.  Crashes are replaced at once,
unless they come so often (flapping) that they too back off.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable

from attrs import define, field
from twisted.application.internet import backoffPolicy
from twisted.internet.interfaces import IReactorTime


def _smallJitter() -> float:
    return random.uniform(0.0, 0.1)


@define
class RespawnPolicy:
    """
    @ivar maxBootFailures: Consecutive boot failures, with no worker ever
        ready, after which the master gives up.
    @ivar flapWindow: Seconds over which crashes are counted.
    @ivar flapThreshold: Crashes within C{flapWindow} replaced at once;
        beyond that, replacements back off.
    """

    _clock: IReactorTime
    bootRetryDelay: Callable[[int], float] = backoffPolicy(0.1, 10.0, 2.0, jitter=_smallJitter)
    crashRetryDelay: Callable[[int], float] = backoffPolicy(0.5, 30.0, 2.0, jitter=_smallJitter)
    maxBootFailures: int = 5
    flapWindow: float = 60.0
    flapThreshold: int = 5
    bootFailures: int = field(default=0, init=False)
    everReady: bool = field(default=False, init=False)
    _crashes: deque[float] = field(factory=deque, init=False)

    def workerReady(self) -> None:
        self.bootFailures = 0
        self.everReady = True

    def shouldGiveUp(self) -> bool:
        return not self.everReady and self.bootFailures >= self.maxBootFailures

    def workerDied(self, wasReady: bool) -> float | None:
        """
        A worker died unexpectedly.

        @return: Seconds to wait before replacing it, or L{None} to give up.
        """
        if not wasReady:
            self.bootFailures += 1
            if self.shouldGiveUp():
                return None
            return self.bootRetryDelay(self.bootFailures)
        now = self._clock.seconds()
        self._crashes.append(now)
        while self._crashes and self._crashes[0] < now - self.flapWindow:
            self._crashes.popleft()
        excess = len(self._crashes) - self.flapThreshold
        return 0.0 if excess <= 0 else self.crashRetryDelay(excess)
