"""
Load-aware accepting under C{none} (L{twistcluster._common.balance}): the table the
workers share, a worker's port stepping aside while it is ahead (over real
loopback sockets, with a fake clock), and real workers spreading a burst of
connections opened at once.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import time
from collections import Counter

from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from tests.test_transport import RecordingReactor, Responder, received, waitReadable
from twistcluster._common.balance import (
    ASIDE_EVERY,
    MARGIN,
    NOT_SERVING,
    STEP_ASIDE,
    AcceptBalance,
    BalanceTable,
)
from twistcluster._common.ports import ServingTCPPort
from twistcluster._common.twistedinternals import adoptTCPPort


class Table:
    """
    A table and the workers' sides of it, as real workers map it.
    """

    def __init__(self, testCase: SynchronousTestCase, capacity: int = 4) -> None:
        self.table = BalanceTable(capacity)
        testCase.addCleanup(self.table.close)

    def join(self, worker: object) -> tuple[int, AcceptBalance]:
        lent = self.table.lend(worker)
        assert lent is not None
        slot, fd = lent
        try:
            return slot, AcceptBalance(fd, slot)
        finally:
            os.close(fd)


class TableTests(SynchronousTestCase):
    def test_workersSeeEachOther(self) -> None:
        """
        What one worker publishes, the master and the other workers see:
        one is ahead once it has more than MARGIN connections more than the
        least loaded, and no longer when its connections end.
        """
        shared = Table(self)
        oneSlot, one = shared.join("one")
        _, two = shared.join("two")
        for _ in range(MARGIN):
            one.opened()
        self.assertEqual(shared.table.openConnections(oneSlot), MARGIN)
        self.assertFalse(one.ahead())
        one.opened()
        self.assertTrue(one.ahead())
        self.assertFalse(two.ahead())
        two.opened()
        self.assertFalse(one.ahead())
        one.closed()
        one.closed()
        self.assertEqual(shared.table.openConnections(oneSlot), MARGIN - 1)

    def test_stoppedWorkerDoesNotCount(self) -> None:
        """
        A worker that stops accepting (its port closed) counts for nothing:
        no one steps aside for it, and its later ends are not published.
        """
        shared = Table(self)
        _, one = shared.join("one")
        twoSlot, two = shared.join("two")
        for _ in range(MARGIN + 1):
            one.opened()
        self.assertTrue(one.ahead())
        two.stop()
        self.assertFalse(one.ahead())
        two.closed()
        self.assertEqual(shared.table.openConnections(twoSlot), NOT_SERVING)

    def test_slotsGivenOutAgainOnlyOnceReleased(self) -> None:
        """
        A worker asking again gets its own slot; a slot is given out again
        once its worker is released (has exited), and not while every slot
        is taken.
        """
        shared = Table(self, capacity=2)
        table = shared.table
        first = table.lend("one")
        again = table.lend("one")
        second = table.lend("two")
        for lent in (first, again, second):
            assert lent is not None
            os.close(lent[1])
        assert first is not None and again is not None and second is not None
        self.assertEqual(first[0], again[0])
        self.assertNotEqual(first[0], second[0])
        self.assertIsNone(table.lend("three"))
        table.release("one")
        self.assertEqual(table.openConnections(first[0]), NOT_SERVING)
        third = table.lend("three")
        assert third is not None
        os.close(third[1])
        self.assertEqual(third[0], first[0])
        self.assertEqual(table.openConnections(third[0]), 0)

    def test_acceptedByAll(self) -> None:
        """
        The total of every worker's accepts changes when another accepts,
        and not when a connection ends.
        """
        shared = Table(self)
        _, one = shared.join("one")
        _, two = shared.join("two")
        before = one.acceptedByAll()
        two.opened()
        self.assertEqual(one.acceptedByAll(), before + 1)
        two.closed()
        self.assertEqual(one.acceptedByAll(), before + 1)

    def test_closedTable(self) -> None:
        """
        A closed table lends nothing; releasing a worker then is harmless.
        """
        table = BalanceTable(2)
        lent = table.lend("one")
        assert lent is not None
        os.close(lent[1])
        table.close()
        self.assertIsNone(table.lend("two"))
        table.release("one")


class SteppingAsideTests(SynchronousTestCase):
    """
    A worker's port with a balance: it steps aside while it is ahead.
    """

    def setUp(self) -> None:
        self.shared = Table(self)
        self.slot, self.balance = self.shared.join("this worker")
        _, self.other = self.shared.join("the other worker")
        listening = socket.socket()
        self.addCleanup(listening.close)
        listening.bind(("127.0.0.1", 0))
        listening.listen(64)
        listening.setblocking(False)
        self.reactor = RecordingReactor()
        self.port = adoptTCPPort(
            ServingTCPPort, self.reactor, listening.fileno(), socket.AF_INET, Factory.forProtocol(Protocol)
        )
        self.port.balanceWith(self.balance)
        self.port.startListening()
        self.addCleanup(self.closePort)
        self.clients: list[socket.socket] = []

    def closePort(self) -> None:
        for transport in self.reactor.getReaders():
            if transport is not self.port:
                transport.connectionLost(Failure(ConnectionDone()))
        if self.port.connected:
            self.port.connectionLost(Failure(ConnectionDone()))

    def connect(self, count: int) -> None:
        address = self.port.getHost()
        for _ in range(count):
            client = socket.create_connection((address.host, address.port))
            self.addCleanup(client.close)
            self.clients.append(client)
        waitReadable(self.port.fileno())

    def test_leavesTheRestOfABurst(self) -> None:
        """
        A worker that gets more than MARGIN connections ahead of the least
        loaded one stops accepting for the rest of the pass and for
        STEP_ASIDE seconds, leaving the backlog to the others.
        """
        self.connect(MARGIN + 3)
        self.port.doRead()
        self.assertEqual(self.balance.open, MARGIN + 1)
        self.assertNotIn(self.port, self.reactor.getReaders())
        [stepBack] = self.reactor.getDelayedCalls()
        self.assertAlmostEqual(stepBack.getTime(), STEP_ASIDE)

    def test_takesThemIfNoOneElseDid(self) -> None:
        """
        If no other worker accepted anything while it stood aside, it
        accepts a whole pass, ahead or not (even once it may step aside
        again).
        """
        self.connect(MARGIN + 3)
        self.port.doRead()
        self.reactor.advance(STEP_ASIDE)
        self.reactor.advance(ASIDE_EVERY)
        self.assertIn(self.port, self.reactor.getReaders())
        self.port.doRead()
        self.assertEqual(self.balance.open, MARGIN + 3)

    def test_looksAgainIfOthersAccepted(self) -> None:
        """
        If another worker accepted meanwhile, it looks at the loads again
        (once it may step aside again, ASIDE_EVERY): it accepts only until
        it is ahead again, and steps aside again.
        """
        self.connect(MARGIN + 3)
        self.port.doRead()
        self.other.opened()
        self.reactor.advance(ASIDE_EVERY)
        self.port.doRead()
        self.assertEqual(self.balance.open, MARGIN + 2)
        self.assertNotIn(self.port, self.reactor.getReaders())

    def test_atMostOnceEvery(self) -> None:
        """
        Within ASIDE_EVERY of stepping aside it accepts even while ahead:
        under many short connections the counts swing too fast to follow.
        """
        self.connect(MARGIN + 3)
        self.port.doRead()
        self.other.opened()
        self.reactor.advance(STEP_ASIDE)
        self.port.doRead()
        self.assertEqual(self.balance.open, MARGIN + 3)
        self.assertIn(self.port, self.reactor.getReaders())

    def test_notAheadAcceptsAll(self) -> None:
        """
        A worker within MARGIN of the least loaded accepts the whole burst.
        """
        for _ in range(MARGIN + 3):
            self.other.opened()
        self.connect(MARGIN + 3)
        self.port.doRead()
        self.assertEqual(self.balance.open, MARGIN + 3)
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_endsCounted(self) -> None:
        """
        A connection's end is published, also one closed in its first read.
        """
        self.port.factory = Factory.forProtocol(Closing)
        self.connect(2)
        self.clients[0].sendall(b"hello")
        waitReadable(self.port.fileno())
        self.port.doRead()
        # The first client's request was answered and closed at once.
        self.assertEqual(received(self.clients[0]), b"HELLO")
        self.assertEqual(self.balance.open, 1)
        self.assertEqual(self.shared.table.openConnections(self.slot), 1)

    def test_stoppingPortStaysStopped(self) -> None:
        """
        A port told to stop listening while it stands aside does not start
        reading again if its time aside ends in that same turn, before the
        port is closed (on the next).
        """
        self.connect(MARGIN + 3)
        self.port.doRead()
        stepBack = next(c for c in self.reactor.getDelayedCalls() if c.getTime() == STEP_ASIDE)
        self.port.stopListening()
        stepBack.func(*stepBack.args, **stepBack.kw)
        self.assertNotIn(self.port, self.reactor.getReaders())
        self.reactor.advance(0)
        self.assertFalse(self.port.connected)

    def test_closedPortStopsCounting(self) -> None:
        """
        A port that stops listening takes its worker off the table and
        cancels its return.
        """
        self.connect(MARGIN + 3)
        self.port.doRead()
        self.port.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.shared.table.openConnections(self.slot), NOT_SERVING)
        self.assertEqual(self.reactor.getDelayedCalls(), [])


class Closing(Responder):
    close = True


def _onOneCPUFirst(pids: list[int]) -> None:
    """
    Run C{pids} on one CPU, ahead of the machine's other processes if we
    may (C{SCHED_FIFO}): then one worker runs exactly while the other waits
    (it steps aside, or it is done), whatever else loads the machine.
    """
    cpu = min(os.sched_getaffinity(0))
    for pid in pids:
        os.sched_setaffinity(pid, {cpu})
        try:
            os.sched_setscheduler(pid, os.SCHED_FIFO, os.sched_param(1))
        except PermissionError:
            # Not root (nor RLIMIT_RTPRIO): as fair as the machine's load allows.
            pass


def test_none_spreads_a_burst(cluster):
    """
    Under none, 64 connections opened at once to 2 real workers are spread
    between them: each worker gets at least 4 in every burst.  Without the
    balance, the worker that runs first takes all 64 in every such burst.

    At once: the 64 wait in the backlog while the workers are stopped, and
    both are woken together.  The balance leaves the rest of a burst to a
    worker that runs within STEP_ASIDE (2 ms); on a busy machine a worker
    woken by the kernel may wait longer than that for a CPU (then the first
    takes the rest, as it would from a hung worker), so the workers share
    one CPU with a real-time priority: the second runs as soon as the first
    steps aside, whatever else runs on the machine.  Bursts closer together
    than ASIDE_EVERY are not balanced this well.
    """
    c = cluster(
        "--workers",
        "2",
        "--scheduling",
        "none",
        "--listen",
        "tcp:0:interface=127.0.0.1:backlog=128",
        "tests.clusterapps.WhoAmIFactory",
    )
    workers = list(c.waitReady(2).values())
    address = c.address()
    _onOneCPUFirst(workers)
    for _ in range(5):
        for pid in workers:
            os.kill(pid, signal.SIGSTOP)
        clients = [socket.create_connection(address, timeout=20) for _ in range(64)]
        # Both at once: one by one, the first continued could take its
        # CPU from this process before it continues the second.
        os.killpg(c.process.pid, signal.SIGCONT)
        try:
            served: Counter[str] = Counter()
            for client in clients:
                match = re.search(rb"worker=(\d+)", client.recv(100))
                assert match is not None
                served[match.group(1).decode()] += 1
        finally:
            for client in clients:
                client.close()
        assert len(served) == 2 and min(served.values()) >= 4, served
        # The next burst comes later than ASIDE_EVERY, as a pool's would: a
        # worker steps aside at most once in that time (not a wait for an
        # event, the scenario itself).
        time.sleep(2 * ASIDE_EVERY)
    c.signal(signal.SIGTERM)
    assert c.wait() == 0
    assert c.leftovers() == []
