"""
Node's event emitters and the Deferred form of one-time events.
"""

from __future__ import annotations

from twisted.logger import LogLevel, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from twistcluster._common.events import EventEmitter, Latch


class EventEmitterTests(SynchronousTestCase):
    def test_onOnceOffInOrder(self) -> None:
        emitter = EventEmitter()
        calls: list[tuple[str, tuple]] = []
        always = lambda *a: calls.append(("always", a))  # noqa: E731
        emitter.on("x", always).once("x", lambda *a: calls.append(("once", a)))
        self.assertTrue(emitter.emit("x", 1, 2))
        self.assertTrue(emitter.emit("x", 3))
        self.assertEqual(calls, [("always", (1, 2)), ("once", (1, 2)), ("always", (3,))])
        emitter.off("x", always)
        self.assertFalse(emitter.emit("x"))
        self.assertEqual(emitter.listenerCount("x"), 0)

    def test_failingHandlerIsLoggedAndOthersRun(self) -> None:
        emitter = EventEmitter()
        events: list[dict] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        calls = []
        emitter.on("x", lambda: 1 / 0).on("x", lambda: calls.append("second"))
        emitter.emit("x")
        self.assertEqual(calls, ["second"])
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.assertEqual([e["log_level"] for e in events if "log_failure" in e], [LogLevel.critical])


class LatchTests(SynchronousTestCase):
    def test_waitBeforeAndAfter(self) -> None:
        latch: Latch[int] = Latch()
        early = latch.wait()
        self.assertNoResult(early)
        latch.fire(7)
        latch.fire(8)  # only the first outcome counts
        self.assertEqual(self.successResultOf(early), 7)
        self.assertEqual(self.successResultOf(latch.wait()), 7)

    def test_failMakesOneErrorPerWaiter(self) -> None:
        latch: Latch[int] = Latch()
        early = latch.wait()
        latch.fail(lambda: ValueError("gone"))
        self.failureResultOf(early, ValueError)
        self.failureResultOf(latch.wait(), ValueError)
        self.assertTrue(latch.done)
