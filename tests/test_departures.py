"""
The supervisor's workers on their way out (L{Departures}): when a worn-out
worker may leave, how an exit is told apart, what an upgrade carries.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from tests.test_supervisor import FakeWorker
from twistcluster._master.departures import Departure, Departures
from twistcluster._master.supervised import RestartCause


class DeparturesTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.journal: list[tuple[str, int, str]] = []
        self.departures: Departures[FakeWorker] = Departures(
            lambda event, worker, reason: self.journal.append((event, worker.id, reason))
        )
        self.one, self.two, self.three = (FakeWorker(i, i - 1, 0) for i in (1, 2, 3))
        self.workers = {w.id: w for w in (self.one, self.two, self.three)}

    def test_wornOutLeavesWhileAnotherIsReady(self) -> None:
        """
        A worn-out worker is dismissed at once if another, not worn out, is
        ready; the journal says why, then that it was asked to leave.
        """
        self.one.ready()
        self.two.ready()
        self.departures.wearOut(self.one, RestartCause.CONNECTION_LIMIT, "took 10", self.workers.values())
        self.assertEqual(self.one.phase, "leaving")
        self.assertEqual(
            self.journal,
            [
                ("worn-out", 1, f"took 10 ({RestartCause.CONNECTION_LIMIT})"),
                ("disconnect", 1, "asked to leave"),
            ],
        )
        self.assertEqual(self.departures.leaving(), ([], [1], []))

    def test_lastReadyServesOnUntilRelieved(self) -> None:
        """
        Worn out, the only ready worker (the others worn out or booting)
        serves on; once another is ready, every worn-out one is dismissed.
        """
        self.one.ready()
        self.two.ready()
        self.departures.wearOut(self.two, RestartCause.MEMORY, "big", [self.two])
        self.departures.wearOut(self.one, RestartCause.MEMORY, "big", self.workers.values())
        self.assertEqual((self.one.phase, self.two.phase), ("ready", "ready"))
        self.assertTrue(self.departures.isWornOut(self.one))
        self.departures.relieve(self.workers.values())
        self.assertEqual(self.departures.leaving(), ([1, 2], [], []))
        self.three.ready()
        self.departures.relieve(self.workers.values())
        self.assertEqual((self.one.phase, self.two.phase, self.three.phase), ("leaving", "leaving", "ready"))
        self.assertEqual(self.departures.leaving(), ([], [1, 2], []))
        self.assertFalse(self.departures.isWornOut(self.one))

    def test_dismissOnlyServing(self) -> None:
        """
        A worker that no longer serves is not dismissed (nor journaled).
        """
        self.one.exit(1)
        self.departures.dismiss(self.one)
        self.assertEqual((self.journal, self.departures.leaving()), ([], ([], [], [])))

    def test_exitKinds(self) -> None:
        """
        An exit after being asked to leave wins over having hung; a hung
        worker's is L{Departure.HUNG}; any other's is L{None}.  Each is then
        forgotten.
        """
        self.departures.dismiss(self.one)
        self.departures.hang(self.one, "no heartbeat")
        self.departures.hang(self.two, "no heartbeat")
        self.assertEqual(self.two.aborted, "no heartbeat")
        self.assertEqual(self.departures.leaving(), ([], [1], [1, 2]))
        self.assertEqual(
            [self.departures.exited(w) for w in (self.one, self.two, self.three)],
            [Departure.ASKED, Departure.HUNG, None],
        )
        self.assertEqual(self.departures.leaving(), ([], [], []))

    def test_wornOutExitIsAsked(self) -> None:
        """
        A worn-out worker that exits before it was dismissed was asked to
        leave too.
        """
        self.departures.wearOut(self.one, RestartCause.MEMORY, "big", [])
        self.assertIs(self.departures.exited(self.one), Departure.ASKED)
        self.assertEqual(self.departures.leaving(), ([], [], []))

    def test_carriedOver(self) -> None:
        """
        What an earlier image of the master knew comes across, but for
        workers that are gone meanwhile.
        """
        self.departures.carriedOver(self.workers, wornOut=[1, 7], dismissed=[2, 8], hung=[3, 9])
        self.assertEqual(self.departures.leaving(), ([1], [2], [3]))
        self.assertTrue(self.departures.isWornOut(self.one))
        self.assertIs(self.departures.exited(self.three), Departure.HUNG)
