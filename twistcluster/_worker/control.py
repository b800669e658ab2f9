# -*- test-case-name: tests.test_handoff, tests.test_statistics -*-
"""
The worker's end of its control channel (fd 3): the AMP responders for what
the master asks of a worker (take a hand-off, leave, answer a ping, count
its connections, collect its metrics), each passed on to the worker's
runtime.  The master's end is L{twistcluster._master.control}.
"""

from __future__ import annotations

from typing import Any, Protocol

from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

from .._common.protocol import ControlChannel, Disconnect, NewConn, Ping
from .._common.statistics import CollectMetrics, WorkerStatistics
from .intake import HandOffIntake
from .metrics import encodedFamilies
from .tracking import OpenConnections


class Controlled(Protocol):
    """
    What the worker's end of the channel needs of the worker's runtime.

    @ivar intake: Takes the connections the master hands over.
    @ivar openConnections: The connections the worker serves.
    """

    intake: HandOffIntake
    openConnections: OpenConnections

    def disconnect(self) -> None:
        """
        The master asked the worker to leave.
        """

    def messageReceived(self, value: Any) -> None:
        """
        A user message from the master.
        """

    def controlLost(self) -> None:
        """
        The channel closed.
        """


class WorkerControl(ControlChannel):
    """
    The worker's end of the control channel.
    """

    _log = Logger()

    def __init__(self, runtime: Controlled) -> None:
        super().__init__()
        self._runtime = runtime

    @NewConn.responder
    def newConn(self, key: str, fds: list[int | None]) -> dict[str, Any]:
        return self._runtime.intake.take(key, fds)

    @Disconnect.responder
    def disconnect(self) -> dict[str, Any]:
        self._runtime.disconnect()
        return {}

    @Ping.responder
    def ping(self) -> dict[str, Any]:
        return {}

    @WorkerStatistics.responder
    def statistics(self) -> dict[str, Any]:
        connections = self._runtime.openConnections
        return {"connectionsOpen": len(connections), "connectionsTotal": connections.total}

    @CollectMetrics.responder
    def collectMetrics(self, maxBytes: int) -> dict[str, Any]:
        return {"families": encodedFamilies(maxBytes)}

    def messageReceived(self, value: Any) -> None:
        self._runtime.messageReceived(value)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._runtime.controlLost()
        super().connectionLost(reason)
