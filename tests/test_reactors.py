"""
The reactors' intersections (L{twistcluster._common.reactors}): a reactor is
typed by one only once it provides every interface the intersection extends.
"""

from __future__ import annotations

from twisted.internet.interfaces import IReactorCore, IReactorFDSet, IReactorTime
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import Interface

from twistcluster._common import reactors
from twistcluster._common.reactors import (
    IAcceptingReactor,
    IClusterReactor,
    IMasterReactor,
    IServingReactor,
    IWorkerReactor,
    narrowed,
)

INTERSECTIONS = [
    getattr(reactors, name) for name in dir(reactors) if name.startswith("I") and name.endswith("Reactor")
]


class NarrowedTests(SynchronousTestCase):
    def test_theInstalledReactorProvidesEvery(self) -> None:
        """
        The reactor twist and task.react install (the platform's default)
        provides every interface of every intersection, the widest included.
        """
        from twisted.internet import reactor

        self.assertIn(IClusterReactor, INTERSECTIONS)
        self.assertEqual(len(INTERSECTIONS), 10)
        for intersection in INTERSECTIONS:
            self.assertIs(narrowed(reactor, intersection), reactor)

    def test_missingInterfacesNamed(self) -> None:
        """
        A reactor short of an interface is refused, with a message naming
        the reactor's type and each interface it lacks.
        """
        memory = MemoryReactorClock()
        error = self.assertRaises(TypeError, narrowed, memory, IWorkerReactor)
        self.assertEqual(str(error), "MemoryReactorClock does not provide IReactorFromThreads")
        error = self.assertRaises(TypeError, narrowed, object(), IWorkerReactor)
        self.assertEqual(
            str(error),
            "object does not provide IReactorSocket, IReactorFDSet, IReactorTime, "
            "IReactorCore, IReactorFromThreads",
        )

    def test_intersectionsExtendTwistedsInterfaces(self) -> None:
        """
        Each intersection is a zope interface extending Twisted's: a part
        typed by one can be handed to a part typed by what it extends.
        """
        self.assertTrue(IWorkerReactor.extends(IReactorTime))
        self.assertTrue(IClusterReactor.extends(IReactorCore))
        self.assertTrue(IClusterReactor.extends(IWorkerReactor))

    def test_theEnginesRunTheAcceptLoop(self) -> None:
        """
        The master's engine runs the hand-off ports, and a worker serves on
        the listening sockets the master sends: each reactor is what the
        accept loop needs.
        """
        self.assertTrue(IMasterReactor.extends(IAcceptingReactor))
        self.assertTrue(IWorkerReactor.extends(IServingReactor))
        self.assertTrue(IServingReactor.extends(IAcceptingReactor))
        self.assertEqual(
            set(IAcceptingReactor.__iro__) - {IAcceptingReactor, Interface}, {IReactorFDSet, IReactorTime}
        )
