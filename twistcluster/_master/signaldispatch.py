# -*- test-case-name: tests.test_signaldispatch, tests.test_agent -*-
"""
What the master does with each signal it receives (the dispositions are
L{twistcluster._master.signals}'): a signal is queued by its Python handler
and handled on the reactor's thread, one at a time, in the order received.

Those still queued when the master upgrades itself are carried across the
C{exec} (L{SignalDispatch.unhandled}), and the new image handles them.

The ones that change the workers (C{HUP}, C{TTIN}, C{TTOU}) are ignored, and
logged, once a stop was asked, and while an upgrade checks the new code or
hands over to it.
"""

from __future__ import annotations

import signal
from typing import Any, ClassVar, Protocol

from attrs import define, field
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorFromThreads
from twisted.logger import Logger

from .phase import MasterPhase
from .signals import STOP, installMasterHandlers, signalName


class Upgrading(Protocol):
    """
    What the dispatch needs of the master's upgrade
    (L{twistcluster._master.upgrade.MasterUpgrade}).
    """

    def start(self) -> Deferred[dict[str, Any]]: ...

    def underWay(self) -> bool: ...


class Signalled(Protocol):
    """
    What the dispatch needs of the master (L{twistcluster._master.service.Master}).
    """

    @property
    def upgrade(self) -> Upgrading: ...

    @property
    def phase(self) -> MasterPhase: ...

    def isStopping(self) -> bool: ...

    def requestStop(self, by: str) -> None: ...

    def reopenLogs(self, by: str) -> None: ...

    def restartAll(self) -> Deferred[int]: ...

    def addWorker(self) -> None: ...

    def removeWorker(self) -> None: ...


#: The signals that change the workers.
_WORKER_CHANGES = frozenset({signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU})


@define
class SignalDispatch:
    """
    The master's signals, queued, then handled on the reactor's thread.

    @ivar _reactor: Runs each handling from the signal handler.
    @ivar _master: What each signal acts on.
    @ivar _unhandled: The signals received and not handled yet.
    """

    _reactor: IReactorFromThreads
    _master: Signalled
    _unhandled: list[int] = field(factory=list)
    _log: ClassVar[Logger] = Logger()

    def install(self) -> None:
        """
        Route every signal the master handles here.
        """
        installMasterHandlers(self.signalled)

    def signalled(self, signum: int, frame: Any = None) -> None:
        """
        A Python signal handler: queue C{signum}, to be handled on the
        reactor's thread.
        """
        self._unhandled.append(signum)
        self._reactor.callFromThread(self._next)

    def unhandled(self) -> list[int]:
        """
        The signals received and not handled yet (they wait for the next
        image of the master, across an upgrade).
        """
        return list(self._unhandled)

    def _next(self) -> None:
        if self._unhandled:
            self.dispatch(self._unhandled.pop(0))

    def dispatch(self, signum: int) -> None:
        """
        Do what C{signum} asks of the master, now.
        """
        master, name = self._master, signalName(signum)
        if signum in STOP:
            master.requestStop(name)
        elif signum == signal.SIGUSR1:
            master.reopenLogs(name)
        elif signum == signal.SIGUSR2:
            master.upgrade.start()
        elif signum not in _WORKER_CHANGES:
            self._log.warn("{signal} means nothing to the master; ignored", signal=name)
        elif master.isStopping():
            self._log.info("{signal} ignored: {phase}", signal=name, phase=master.phase.value)
        elif master.upgrade.underWay():
            self._log.info("{signal} ignored: an upgrade is under way", signal=name)
        elif signum == signal.SIGHUP:
            done = master.restartAll()
            done.addErrback(lambda reason: self._log.failure("the rolling restart failed", reason))
        elif signum == signal.SIGTTIN:
            master.addWorker()
        else:
            master.removeWorker()
