# -*- test-case-name: tests.test_picking, tests.test_leastconn_burst -*-
"""
Which of the workers with room in their window gets the next connection.

A L{PickStrategy} chooses for L{HandOffScheduler
<twistcluster._master.scheduling.HandOffScheduler>} and hears what becomes of
the connections it placed: L{RoundRobin} (the one that has waited longest) or
L{LeastConnections}.  Per connection, a pick is plain integer arithmetic.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Collection, Hashable, Mapping
from typing import Generic, Protocol, TypeVar

W = TypeVar("W", bound=Hashable)


class PickStrategy(Protocol[W]):
    """
    Chooses among the workers with room in their window, and hears what
    happens to the connections it placed.
    """

    def pick(self, ready: deque[W], inFlight: Mapping[W, Collection[int]]) -> W:
        """
        Take the next worker out of C{ready} (not empty; longest ready first).

        @param inFlight: Each worker's hand-offs it has not acked yet.
        """

    def handedOff(self, worker: W) -> None:
        """
        A connection went to C{worker}.
        """

    def refused(self, worker: W) -> None:
        """
        C{worker} refused a connection it was handed.
        """

    def closed(self, worker: W, count: int) -> None:
        """
        C{count} connections C{worker} was handed have ended.
        """

    def forget(self, worker: W) -> None:
        """
        C{worker} is gone.
        """

    #: Whether the scheduler should wait for a worker whose window is full
    #: when L{wouldRather} says so.
    waitsForRoom: bool

    def wouldRather(self, waiting: W, than: W) -> bool:
        """
        Should the next connection wait for room in C{waiting}'s window
        rather than go to C{than} now?
        """


class RoundRobin(Generic[W]):
    """
    Each worker in turn: the one that has waited longest.
    """

    waitsForRoom = False

    def wouldRather(self, waiting: W, than: W) -> bool:
        return False

    def pick(self, ready: deque[W], inFlight: Mapping[W, Collection[int]]) -> W:
        return ready.popleft()

    def handedOff(self, worker: W) -> None:
        pass

    def refused(self, worker: W) -> None:
        pass

    def closed(self, worker: W, count: int) -> None:
        pass

    def forget(self, worker: W) -> None:
        pass


class LeastConnections(Generic[W]):
    """
    The worker with the fewest live connections (handed off and not yet
    reported closed); among equals, one with no unacked hand-off (a worker
    busy in a slow request cannot ack), then the one that has waited
    longest.  Workers report the ends of connections in batches, and at once
    when their last open connection ends, so an idle worker's count is
    current when the next connection comes.

    In a burst, the window of unacked hand-offs fills before the counts even
    out: the emptier worker's window full, the next connections would fill
    the busier one (40 new connections split 24/16 to 31/9 where the live
    counts called for all of them on the emptier worker).  So a connection
    waits for room in a full window whose worker has more than L{MARGIN}
    fewer live connections than the worker with room (the scheduler bounds
    the wait).
    """

    #: Live connections fewer by more than this are worth waiting for.
    MARGIN = 2
    waitsForRoom = True

    def __init__(self) -> None:
        self._live: dict[W, int] = {}

    def live(self, worker: W) -> int:
        return self._live.get(worker, 0)

    def wouldRather(self, waiting: W, than: W) -> bool:
        live = self._live
        return live.get(waiting, 0) + self.MARGIN < live.get(than, 0)

    def pick(self, ready: deque[W], inFlight: Mapping[W, Collection[int]]) -> W:
        live = self._live
        # Among equal live counts, a worker that has acked every hand-off
        # first: one spinning in a slow request cannot ack (Node's primary
        # hands off only to such a worker).  Twice the count, plus one while
        # a hand-off is unacked, keeps that a tie-break; min() keeps the
        # first of equals, so FIFO order breaks the remaining ties.
        chosen = min(ready, key=lambda w: 2 * live.get(w, 0) + (1 if inFlight[w] else 0))
        ready.remove(chosen)
        return chosen

    def handedOff(self, worker: W) -> None:
        self._live[worker] = self.live(worker) + 1

    def refused(self, worker: W) -> None:
        self.closed(worker, 1)

    def closed(self, worker: W, count: int) -> None:
        if worker in self._live:
            self._live[worker] = max(0, self._live[worker] - count)

    def forget(self, worker: W) -> None:
        self._live.pop(worker, None)

    def adopt(self, worker: W, live: int) -> None:
        """
        C{worker} has C{live} connections already (an earlier image of the
        master handed them over, before an upgrade).
        """
        if live:
            self._live[worker] = live
