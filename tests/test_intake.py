"""
A worker taking hand-offs: clients already gone, and descriptors run out.
"""

from __future__ import annotations

import errno
import os
from typing import Any

from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from twistcluster._worker.intake import HandOffIntake


class Port:
    key = "k"
    reportClosed = True

    def __init__(self, error: int | None = None) -> None:
        self.error = error
        self.served: list[int] = []

    def connectionReceived(self, fd: int) -> bool:
        if self.error is not None:
            raise OSError(self.error, os.strerror(self.error))
        self.served.append(fd)
        return True


class IntakeTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.ports: dict[str, Any] = {}
        self.closed: list[str] = []
        self.intake = HandOffIntake(self.clock, 3, self.ports, self.closed.append)
        self.events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def fds(self, count: int) -> list[int | None]:
        made: list[int | None] = []
        for _ in range(count):
            r, w = os.pipe()
            os.close(w)
            made.append(r)
        return made

    def lines(self) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("log_namespace", "").startswith("twistcluster")]

    def test_clientsGone(self) -> None:
        """
        Adopting a connection whose client is gone (getpeername fails):
        answered as taken, counted, reported closed (least-conn counted it);
        one line per interval, however many.
        """
        self.ports["k"] = Port(errno.ENOTCONN)
        for _ in range(50):
            self.assertEqual(self.intake.take("k", self.fds(2)), {"accepted": [True, True]})
        self.assertEqual(self.intake.gone, 100)
        self.assertEqual(len(self.closed), 100)
        self.assertEqual(self.lines(), [])
        self.clock.advance(self.intake.summaryInterval)
        [line] = self.lines()
        self.assertEqual((line["count"], line["total"]), (100, 100))
        self.assertNotIn("log_failure", line)

    def test_outOfDescriptors(self) -> None:
        """
        Sockets that never arrived, or that cannot be adopted for want of
        descriptors: refused, with outOfDescriptors; said once per interval.
        """
        self.ports["k"] = Port(errno.EMFILE)
        answer = self.intake.take("k", [None, *self.fds(1)])
        self.assertEqual(answer, {"accepted": [False, False], "outOfDescriptors": True})
        self.ports["k"] = Port()
        answer = self.intake.take("k", [None, *self.fds(1)])
        self.assertEqual(answer, {"accepted": [False, True], "outOfDescriptors": True})
        self.assertEqual(self.intake.refusedShort, 3)
        self.assertEqual(len(self.lines()), 1)
        self.clock.advance(self.intake.summaryInterval)
        self.intake.take("k", [None])
        self.assertEqual(len(self.lines()), 2)
        self.assertEqual(self.intake.take("k", self.fds(1)), {"accepted": [True]})
