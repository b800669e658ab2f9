# -*- test-case-name: tests.test_tracking, tests.test_handoff -*-
"""
The connections a worker serves, counted open from the protocol its port
builds until that protocol's C{connectionLost}: what a graceful stop waits
for, and (under C{least-conn}) what the master hears has ended.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.python.failure import Failure

from .._common.events import Latch
from .._common.protocol import ConnectionsClosed


class ClosedConnectionReports:
    """
    Tells the master, in batches, how many of the connections it handed
    over have ended: at most one C{ConnectionsClosed} per key every
    C{interval} seconds, so a connection's end costs a counter increment;
    but soon when the worker's last open connection ends (it is idle): at
    once, or C{promptGap} after the last report.

    Measured (issue 19): reporting every idle moment at once cost the master
    a box per few connections under 64 concurrent short connections (its CPU
    per connection 27 to 44 us, least-conn's new conn/s 12.2k to 10.3k);
    at most one prompt report every 5 ms keeps that to a few hundred boxes
    a second, while at 100 requests/s an idle worker is still counted idle
    when the next connection comes.
    """

    def __init__(
        self,
        clock: IReactorTime,
        send: Callable[..., object],
        interval: float = 0.05,
        promptGap: float = 0.005,
    ) -> None:
        self._clock = clock
        self._send = send
        self.interval = interval
        self.promptGap = promptGap
        self._counts: dict[str, int] = {}
        self._pending: IDelayedCall | None = None
        self._lastSent = float("-inf")

    def closed(self, key: str, idle: bool = False) -> None:
        """
        A connection on C{key} ended.

        @param idle: It was the worker's last open connection: report soon,
            with whatever the batch holds, so that the master counts an idle
            worker as idle when the next connection comes (least-conn), not
            up to C{interval} later.
        """
        self._counts[key] = self._counts.get(key, 0) + 1
        if idle:
            wait = self._lastSent + self.promptGap - self._clock.seconds()
            if wait <= 0:
                self.flush()
            elif self._pending is None:
                self._pending = self._clock.callLater(wait, self.flush)
            elif self._pending.getTime() > self._lastSent + self.promptGap:
                self._pending.reset(wait)
        elif self._pending is None:
            self._pending = self._clock.callLater(self.interval, self.flush)

    def flush(self) -> None:
        if self._pending is not None and self._pending.active():
            self._pending.cancel()
        self._pending = None
        counts, self._counts = self._counts, {}
        for key, count in counts.items():
            self._send(ConnectionsClosed, key=key, count=count)
        if counts:
            self._lastSent = self._clock.seconds()


class OpenConnections:
    """
    @ivar protocols: The protocols of the connections open now.
    @ivar total: How many connections were ever opened.
    @ivar reports: Where the ends of reported connections go.
    """

    def __init__(self, reports: ClosedConnectionReports) -> None:
        self.protocols: set[Any] = set()
        self.total = 0
        self.reports = reports
        self._allClosed: Latch[None] | None = None

    def __len__(self) -> int:
        return len(self.protocols)

    def opened(self, port: Any, protocol: Any) -> None:
        """
        Count C{protocol} open until its C{connectionLost}; then, if
        C{port.reportClosed}, report its end under C{port.key}.
        """
        # Twisted gives no hook for a connection's end, and a protocol
        # wrapper would cost every dataReceived call: wrap the protocol's
        # own connectionLost instead.
        self.protocols.add(protocol)
        self.total += 1
        lost = protocol.connectionLost

        def connectionLost(reason: Failure) -> None:
            # The protocol holds this function, which holds the protocol:
            # break the cycle, so that the connection (its transport, socket
            # and buffers) is freed when it ends, not by the cyclic garbage
            # collector some time later.
            vars(protocol).pop("connectionLost", None)
            self.protocols.discard(protocol)
            try:
                lost(reason)
            finally:
                if port.reportClosed and port.key is not None:
                    self.reports.closed(port.key, not self.protocols)
                if self._allClosed is not None and not self.protocols:
                    allClosed, self._allClosed = self._allClosed, None
                    allClosed.fire(None)

        protocol.connectionLost = connectionLost

    def whenAllClosed(self) -> Deferred[None]:
        """
        Fires once no connection is open (now, if none is).
        """
        if not self.protocols:
            return succeed(None)
        if self._allClosed is None:
            self._allClosed = Latch()
        return self._allClosed.wait()
