# -*- test-case-name: tests.test_departures, tests.test_supervisor -*-
"""
The workers on their way out of a
L{Supervisor<twistcluster._master.supervisor.Supervisor>}, and how they are
sent off: worn out (replaced, but serving on until another worker is ready
to take their share), dismissed (told to leave: they drain), hung
(aborted).  When one exits, L{Departures.exited} says which it was: the
supervisor replaces a dismissed one without backoff, a hung one as one that
died.

A master upgrade carries them across (L{Departures.leaving},
L{Departures.carriedOver}): the new image must not take a worker it
dismissed for one that died.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from enum import Enum
from typing import Generic

from twisted.logger import Logger

from .supervised import RestartCause, W


class Departure(Enum):
    """
    Why a worker that exited was on its way out.
    """

    #: Worn out or dismissed: its replacement is started already.
    ASKED = "asked to leave"
    #: Aborted for not answering: it died, as far as the backoff goes.
    HUNG = "hung"


class Departures(Generic[W]):
    """
    The workers on their way out, by id, and how they are sent off.

    @ivar _journal: Told of each departure (C{worn-out}, C{disconnect},
        C{hung}) with its worker and reason, as the supervisor's journal is.
    @ivar _wornOut: Workers to replace that still serve, until another
        worker is ready to take their share.
    @ivar _dismissed: Workers told to leave.
    @ivar _hung: Workers aborted for not answering.
    """

    _log = Logger()

    def __init__(self, journal: Callable[[str, W, str], object]) -> None:
        self._journal = journal
        self._wornOut: dict[int, W] = {}
        self._dismissed: set[int] = set()
        self._hung: set[int] = set()

    def isWornOut(self, worker: W) -> bool:
        return worker.id in self._wornOut

    def wearOut(self, worker: W, cause: RestartCause, why: str, workers: Iterable[W]) -> None:
        """
        C{worker} (serving, not worn out yet) is to be replaced: it leaves
        the rotation (and drains) at once if another of C{workers} is ready
        to take its share, else as soon as one is (L{relieve}).
        """
        self._journal("worn-out", worker, f"{why} ({cause})")
        self._wornOut[worker.id] = worker
        leaves = self._relief(workers) is not None
        self._log.info(
            "worker {workerId} (pid {pid}) {why}; replacing it ({how})",
            workerId=worker.id,
            pid=worker.pid,
            why=why,
            how="it leaves the rotation now"
            if leaves
            else "the last one ready, it serves on until another worker is",
        )
        if leaves:
            self.dismiss(worker)

    def relieve(self, workers: Iterable[W]) -> None:
        """
        Dismiss the worn-out workers if another of C{workers} is ready to
        take their share; else they serve on (a worn-out worker beats none).
        """
        if not self._wornOut:
            return
        relief = self._relief(workers)
        if relief is None:
            return
        for worker in list(self._wornOut.values()):
            self._log.info(
                "worker {workerId} (pid {pid}) leaves the rotation (worker {other} is ready)",
                workerId=worker.id,
                pid=worker.pid,
                other=relief.id,
            )
            self.dismiss(worker)

    def _relief(self, workers: Iterable[W]) -> W | None:
        """
        The first of C{workers} that is ready and not worn out (L{None}: none).
        """
        wornOut = self._wornOut
        for worker in workers:
            if worker.isReady() and worker.id not in wornOut:
                return worker
        return None

    def dismiss(self, worker: W) -> None:
        """
        Tell C{worker} to leave (it drains), if it still serves.
        """
        if worker.isServing():
            self._dismissed.add(worker.id)
            self._wornOut.pop(worker.id, None)
            self._journal("disconnect", worker, "asked to leave")
            worker.disconnect()

    def hang(self, worker: W, why: str) -> None:
        """
        C{worker} stopped answering (or never became ready): abort it.
        """
        self._hung.add(worker.id)
        self._journal("hung", worker, why)
        worker.abort(why)

    def exited(self, worker: W) -> Departure | None:
        """
        C{worker} exited: forget it.

        @return: Why it was on its way out (asked to leave wins over hung: a
            dismissed worker that hung while it drained was not replaced as
            one that died); L{None} if it was not.
        """
        hung = worker.id in self._hung
        asked = self._wornOut.pop(worker.id, None) is not None or worker.id in self._dismissed
        self._hung.discard(worker.id)
        self._dismissed.discard(worker.id)
        if asked:
            return Departure.ASKED
        return Departure.HUNG if hung else None

    def leaving(self) -> tuple[list[int], list[int], list[int]]:
        """
        The workers on their way out, by id: worn out, dismissed, hung (what
        a master upgrade carries across).
        """
        return sorted(self._wornOut), sorted(self._dismissed), sorted(self._hung)

    def carriedOver(
        self, workers: Mapping[int, W], wornOut: list[int], dismissed: list[int], hung: list[int]
    ) -> None:
        """
        Take over what an earlier image of the master knew of C{workers}
        (an upgrade, L{leaving}); ids of workers not among them are gone
        meanwhile, and dropped.
        """
        self._wornOut = {i: workers[i] for i in wornOut if i in workers}
        self._dismissed = {i for i in dismissed if i in workers}
        self._hung = {i for i in hung if i in workers}
