# -*- test-case-name: tests.test_ctl -*-
"""
The last few dozen lifecycle events of the cluster's workers (one started,
became ready, was asked to leave, exited and why, what replaced it), for
C{twistcluster status}: what an operator asks first when something restarts.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from attrs import asdict, frozen
from twisted.internet.interfaces import IReactorTime


@frozen
class LifecycleEvent:
    """
    @ivar time: When (seconds since the epoch).
    @ivar worker: The worker's id.
    @ivar slot: The worker's slot, if it has one.
    @ivar event: What happened: C{fork}, C{ready}, C{disconnect}, C{exit},
        C{hung}, C{worn-out}.
    @ivar reason: Why, in words (an exit's status and cause, a replacement).
    """

    time: float
    worker: int
    slot: int | None
    event: str
    reason: str


class Journal:
    """
    A bounded record of lifecycle events, oldest first.
    """

    def __init__(self, clock: IReactorTime, size: int = 50) -> None:
        self._clock = clock
        self._events: deque[LifecycleEvent] = deque(maxlen=size)

    def record(self, event: str, worker: int, reason: str = "", slot: int | None = None) -> None:
        self._events.append(LifecycleEvent(self._clock.seconds(), worker, slot, event, reason))

    def events(self) -> list[dict[str, Any]]:
        return [asdict(e) for e in self._events]

    def last(self, event: str) -> LifecycleEvent | None:
        """
        The latest event of that kind, if any is still kept.
        """
        for recorded in reversed(self._events):
            if recorded.event == event:
                return recorded
        return None
