# -*- test-case-name: tests.test_controlsocket -*-
"""
A master with what its operators reach it through (the control socket, the
metrics server), started and stopped in the order that keeps them useful:

    - started first, so a control path already in use fails the start
      before any listening socket or worker exists;
    - stopped last, so that during a graceful stop C{twistcluster status}
      still answers and C{/healthz} says 503;
    - removed at once when the start fails (the reactor never runs to close
      them).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from twisted.application.service import IService, MultiService
from twisted.internet.defer import inlineCallbacks
from twisted.logger import Logger

from .._common.controlpaths import defaultControlPath
from .._common.reactors import IOperatorReactor
from .binding import StartupError
from .controlsocket import ControlSocket
from .journal import Journal
from .operations import Operations
from .service import Master
from .status import ClusterStatus


class OperatedMaster(MultiService):
    """
    Starts its operator services, then the master; stops the master, then
    its operator services (the latest started first).

    @ivar _failed: Called with a one-line reason when an operator service
        cannot start (after the ones started are abandoned); it exits.
    """

    _log = Logger()

    def __init__(self, master: IService, operators: Sequence[Any], failed: Callable[[str], object]) -> None:
        super().__init__()
        self._master = master
        self._operators = list(operators)
        self._failed = failed
        for service in [*self._operators, master]:
            service.setServiceParent(self)

    def startService(self) -> None:
        self.running = 1
        started: list[Any] = []
        for operator in self._operators:
            try:
                operator.startService()
            except StartupError as e:
                self.abandon(started)
                self._failed(str(e))
                return
            started.append(operator)
        self._master.startService()

    def abandon(self, operators: Sequence[Any] | None = None) -> None:
        """
        Undo what started operator services left on disk (a socket file):
        the master failed to start.
        """
        for operator in reversed(self._operators if operators is None else operators):
            abandon = getattr(operator, "abandon", None)
            if abandon is not None:
                abandon()

    @inlineCallbacks
    def stopService(self) -> Any:
        self.running = 0
        yield self._master.stopService()
        for operator in reversed(self._operators):
            if operator.running:
                yield operator.stopService()


def operate(
    reactor: IOperatorReactor,
    master: Master,
    control: str | None,
    metrics: str | None,
    failed: Callable[[str], object],
    owner: tuple[int, int] | None = None,
) -> OperatedMaster:
    """
    C{master} with its operator services.

    @param control: C{--control}: the socket's path, C{"none"}, or L{None}
        for the default path.
    @param metrics: C{--metrics}: the endpoint, or L{None} for none.
    @param failed: Called with a one-line reason if one of them cannot
        start; it exits.
    @param owner: The uid and gid the control socket is given to: those a
        master about to drop privileges drops to (C{--user}); it is made
        before the drop.
    """
    journal = Journal(reactor)
    server: Any = None
    master.supervisor.journal = lambda event, worker, reason: journal.record(
        event, worker.id, reason, worker.slot
    )
    operators: list[Any] = []
    extra: dict[str, Any] = {"controlSocket": None}

    def where() -> dict[str, Any]:
        return {
            **extra,
            "metrics": None if server is None else server.address,
            "upgrade": master.upgrade.describe(),
        }

    status = ClusterStatus(reactor, master, journal, extra=where)
    if control != "none":
        path = control or defaultControlPath()
        extra["controlSocket"] = path
        commands = Operations(master, status, journal).commands()
        operators.append(
            ControlSocket(
                reactor, path, commands, explicit=control is not None, owner=owner, upgrade=master.upgrade
            )
        )
    if metrics is not None:
        from .metrics import ClusterScrape
        from .metricsweb import MetricsServer, metricsSite

        site = metricsSite(ClusterScrape(reactor, master), master)
        server = MetricsServer(reactor, metrics, site, upgrade=master.upgrade)
        operators.append(server)
    return OperatedMaster(master, operators, failed)
