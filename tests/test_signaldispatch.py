"""
What the master does with each signal, decided without processes: a fake
master keeps what was asked of it, a fake reactor runs what the signal
handler hands over to the reactor's thread.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.trial.unittest import SynchronousTestCase

from twistcluster._master.phase import MasterPhase
from twistcluster._master.signaldispatch import SignalDispatch


class FakeUpgrade:
    def __init__(self) -> None:
        self.attempts = 0
        self.checking = False

    def start(self) -> None:
        self.attempts += 1

    def underWay(self) -> bool:
        return self.checking


class FakeMaster:
    """
    A master's state as the signals change it: its size, its phase, how
    many rolling restarts, who asked for a stop and for the logs.
    """

    def __init__(self) -> None:
        self.upgrade = FakeUpgrade()
        self.phase = MasterPhase.RUNNING
        self.size = 2
        self.reloads = 0
        self.stops: list[str] = []
        self.reopened: list[str] = []

    def isStopping(self) -> bool:
        return self.phase is not MasterPhase.RUNNING

    def requestStop(self, by: str) -> None:
        self.stops.append(by)
        self.phase = MasterPhase.DRAINING

    def reopenLogs(self, by: str) -> None:
        self.reopened.append(by)

    def restartAll(self) -> Deferred[int]:
        self.reloads += 1
        return succeed(self.size)

    def addWorker(self) -> None:
        self.size += 1

    def removeWorker(self) -> None:
        self.size -= 1


class FakeReactor:
    """
    Keeps what C{callFromThread} was given until L{turn}.
    """

    def __init__(self) -> None:
        self.calls: list[tuple[Callable[..., object], tuple[Any, ...]]] = []

    def callFromThread(self, f: Callable[..., object], *args: Any, **kwargs: Any) -> None:
        self.calls.append((f, args))

    def turn(self) -> None:
        calls, self.calls = self.calls, []
        for f, args in calls:
            f(*args)


class SignalDispatchTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.master = FakeMaster()
        self.reactor = FakeReactor()
        self.signals = SignalDispatch(self.reactor, self.master)

    def dispatch(self, *signums: int) -> None:
        for signum in signums:
            self.signals.dispatch(signum)

    def state(self) -> tuple[int, int, int]:
        return self.master.size, self.master.reloads, self.master.upgrade.attempts

    def test_eachCommand(self) -> None:
        """
        HUP restarts, TTIN adds, TTOU removes, USR1 reopens the logs, USR2
        upgrades.
        """
        self.dispatch(signal.SIGHUP, signal.SIGTTIN, signal.SIGTTIN, signal.SIGTTOU, signal.SIGUSR2)
        self.dispatch(signal.SIGUSR1)
        self.assertEqual((self.state(), self.master.reopened), ((3, 1, 1), ["SIGUSR1"]))
        self.assertEqual(self.master.stops, [])

    def test_stopSignals(self) -> None:
        """
        TERM, INT and QUIT each ask for a stop, named for the log; a second
        one reaches the master too (it stops harder).
        """
        self.dispatch(signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)
        self.assertEqual(self.master.stops, ["SIGTERM", "SIGINT", "SIGQUIT"])

    def test_workerChangesIgnoredOnceStopping(self) -> None:
        """
        Once a stop was asked, HUP, TTIN and TTOU change nothing; USR1
        still reopens the logs.
        """
        for phase in (MasterPhase.DRAINING, MasterPhase.STOPPING):
            self.master.phase = phase
            self.dispatch(signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU, signal.SIGUSR1)
            self.assertEqual(self.state(), (2, 0, 0), phase)
        self.assertEqual(self.master.reopened, ["SIGUSR1", "SIGUSR1"])

    def test_workerChangesIgnoredWhileUpgrading(self) -> None:
        """
        While an upgrade checks the new code or hands over, HUP, TTIN and
        TTOU change nothing; a stop is still a stop.
        """
        self.master.upgrade.checking = True
        self.dispatch(signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU, signal.SIGTERM)
        self.assertEqual((self.state(), self.master.stops), ((2, 0, 0), ["SIGTERM"]))

    def test_meaninglessSignals(self) -> None:
        """
        A signal that means nothing to the master (ALRM, a real-time one)
        changes nothing.
        """
        self.dispatch(signal.SIGALRM, signal.SIGRTMIN + 3)
        self.assertEqual((self.state(), self.master.stops, self.master.reopened), ((2, 0, 0), [], []))

    def test_queuedInOrder(self) -> None:
        """
        A signal handler only queues: the signals are handled on the
        reactor's thread, in the order received, and those not handled yet
        are what an upgrade carries.
        """
        self.signals.signalled(signal.SIGTTIN, None)
        self.signals.signalled(signal.SIGTERM, None)
        self.signals.signalled(signal.SIGTTIN, None)
        self.assertEqual(self.signals.unhandled(), [signal.SIGTTIN, signal.SIGTERM, signal.SIGTTIN])
        self.assertEqual(self.state(), (2, 0, 0))
        self.reactor.turn()
        # The second TTIN came after the stop.
        self.assertEqual((self.state(), self.master.stops), ((3, 0, 0), ["SIGTERM"]))
        self.assertEqual(self.signals.unhandled(), [])
