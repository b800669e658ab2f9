from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from twistcluster._master.respawn import RespawnPolicy


def policy(clock: Clock) -> RespawnPolicy:
    return RespawnPolicy(
        clock,
        bootRetryDelay=lambda n: 0.1 * 2**n,
        crashRetryDelay=lambda n: 0.5 * 2**n,
        maxBootFailures=3,
        flapWindow=60,
        flapThreshold=2,
    )


class RespawnPolicyTests(SynchronousTestCase):
    def test_bootFailuresBackOffThenGiveUp(self) -> None:
        """
        While no worker was ever ready, boot failures back off and the
        third one gives up.
        """
        p = policy(Clock())
        self.assertEqual(p.workerDied(wasReady=False), 0.2)
        self.assertEqual(p.workerDied(wasReady=False), 0.4)
        self.assertIsNone(p.workerDied(wasReady=False))

    def test_neverGiveUpOnceSomeWorkerWasReady(self) -> None:
        """
        After a worker has been ready (the code can work), boot failures keep
        being retried with backoff, and a ready worker resets the count.
        """
        p = policy(Clock())
        p.workerReady()
        delays = [p.workerDied(wasReady=False) for _ in range(5)]
        self.assertEqual(delays, [0.2, 0.4, 0.8, 1.6, 3.2])
        p.workerReady()
        self.assertEqual(p.workerDied(wasReady=False), 0.2)

    def test_crashesReplacedAtOnceUnlessFlapping(self) -> None:
        clock = Clock()
        p = policy(clock)
        self.assertEqual([p.workerDied(wasReady=True) for _ in range(4)], [0.0, 0.0, 1.0, 2.0])
        clock.advance(61)
        self.assertEqual(p.workerDied(wasReady=True), 0.0)
