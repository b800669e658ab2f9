"""
The load balancer's view of a host: HAProxy's agent check (C{--agent}) and
the drain before a stop (C{--drain-delay}).  In process first, then real
masters signalled as users would; the same with a real HAProxy in front is in
tests.test_haproxy.
"""

from __future__ import annotations

import signal
import socket
import time

from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.trial.unittest import SynchronousTestCase

from tests._cluster import connect, readLine, waitUntil, whoServes
from tests.test_bad_input import run
from twistcluster._master.agent import AgentFactory, agentReply
from twistcluster._master.limits import Limits
from twistcluster._master.phase import MasterPhase
from twistcluster._master.service import Master

APP = "tests.clusterapps.whoAmI"
LOOPBACK = "tcp:0:interface=127.0.0.1"


class AgentReplyTests(SynchronousTestCase):
    def test_share(self) -> None:
        """
        Up and ready, at 100 x ready / started workers percent, at most 100,
        never rounded down to 0 while a worker is ready.
        """
        cases = [(4, 4, "100"), (2, 4, "50"), (1, 3, "33"), (3, 2, "100"), (1, 200, "1"), (1, 1, "100")]
        for ready, workers, percent in cases:
            self.assertEqual(agentReply(False, ready, workers), f"up ready {percent}%\n".encode())

    def test_down(self) -> None:
        self.assertEqual(agentReply(False, 0, 4), b"down\n")

    def test_drain(self) -> None:
        """
        Draining or stopping: drain, whatever the workers.
        """
        self.assertEqual(agentReply(True, 4, 4), b"drain\n")
        self.assertEqual(agentReply(True, 0, 4), b"drain\n")

    def test_check(self) -> None:
        """
        Each check gets one line, read from the master at that moment, and
        the connection is closed.
        """
        ready = [2]
        factory = AgentFactory(lambda: False, lambda: ready[0], 4)
        answers = []
        for count in (2, 1):
            ready[0] = count
            transport = StringTransport()
            factory.buildProtocol(None).makeConnection(transport)
            answers.append(transport.value())
            self.assertTrue(transport.disconnecting)
        self.assertEqual(answers, [b"up ready 50%\n", b"up ready 25%\n"])


class DrainTests(SynchronousTestCase):
    """
    The master's phase through a stop, with a fake reactor and clock.
    """

    def master(self, drainDelay: float) -> tuple[Master, MemoryReactorClock]:
        reactor = MemoryReactorClock()
        return Master(reactor, [], ["--factory", APP], 2, Limits(drainDelay=drainDelay)), reactor

    def test_drainDelay(self) -> None:
        """
        TERM: draining at once, still running; the reactor stops (a graceful
        stop) when the delay is over.
        """
        master, reactor = self.master(2.0)
        self.assertEqual((master.phase, master.isStopping()), (MasterPhase.RUNNING, False))
        master.signals.dispatch(signal.SIGTERM)
        self.assertEqual(
            (master.phase, master.isStopping(), reactor.hasStopped), (MasterPhase.DRAINING, True, False)
        )
        reactor.advance(1.9)
        self.assertFalse(reactor.hasStopped)
        reactor.advance(0.1)
        self.assertTrue(reactor.hasStopped)

    def test_againWhileDraining(self) -> None:
        """
        A second TERM or INT while draining stops gracefully now.
        """
        master, reactor = self.master(30.0)
        master.signals.dispatch(signal.SIGTERM)
        master.signals.dispatch(signal.SIGINT)
        self.assertTrue(reactor.hasStopped)

    def test_noDelay(self) -> None:
        """
        With no drain delay (the default), TERM stops at once.
        """
        master, reactor = self.master(0.0)
        master.signals.dispatch(signal.SIGTERM)
        self.assertTrue(reactor.hasStopped)

    def test_scalingIgnoredWhileDraining(self) -> None:
        """
        HUP, TTIN and TTOU change nothing once a stop has begun.
        """
        master, reactor = self.master(5.0)
        master.signals.dispatch(signal.SIGTERM)
        for signum in (signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU):
            master.signals.dispatch(signum)
        self.assertEqual(
            (master.supervisor.size, master.supervisor.workers, master.phase), (2, {}, MasterPhase.DRAINING)
        )


def agentSays(port: int) -> str:
    """
    What the agent answers a check, as HAProxy reads it.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.settimeout(10)
        data = b""
        while chunk := sock.recv(100):
            data += chunk
    return data.decode()


def agentPort(c) -> int:
    return int(c.waitFor(r"agent checks on \S+ at [\d.]+:(\d+)")[0].group(1))


def test_agent_follows_the_workers(cluster):
    """
    A real master: down until a worker is ready, then its share of the
    workers it started with; TTOU to half is 50%, TTIN back is 100%.
    """
    c = cluster("--workers", "2", "--agent", LOOPBACK, "--listen", LOOPBACK, APP)
    port = agentPort(c)
    assert agentSays(port) in ("down\n", "up ready 50%\n", "up ready 100%\n")
    c.waitReady(2)
    assert agentSays(port) == "up ready 100%\n"
    c.signal(signal.SIGTTOU)
    waitUntil(lambda: agentSays(port) == "up ready 50%\n", 20, "the agent to say 50%")
    c.signal(signal.SIGTTIN)
    waitUntil(lambda: agentSays(port) == "up ready 100%\n", 20, "the agent to say 100% again")


def test_drain_delay(cluster):
    """
    TERM with --drain-delay: the agent says drain at once, the master still
    serves new connections for the delay, then stops gracefully (exit 0),
    finishing a connection that was open all along.
    """
    c = cluster("--workers", "2", "--drain-delay", "2", "--agent", LOOPBACK, "--listen", LOOPBACK, APP)
    port = agentPort(c)
    c.waitReady(2)
    address = c.address()
    with connect(address) as longLived:
        readLine(longLived)
        c.signal(signal.SIGTERM)
        c.waitFor(r"SIGTERM: draining for 2.0s \(still accepting\), then stopping gracefully")
        started = time.monotonic()
        assert agentSays(port) == "drain\n"
        served = 0
        while time.monotonic() - started < 1.5:
            whoServes(address)
            served += 1
        assert served > 0 and c.process.poll() is None
        c.waitFor(r"drain delay over: stopping gracefully")
        longLived.sendall(b"still here\n")
        assert readLine(longLived) == "still here\n"
    assert c.wait() == 0
    assert time.monotonic() - started >= 2 - 0.1
    assert c.leftovers() == []


def test_term_twice_cuts_the_drain(cluster):
    """
    A second TERM while draining stops gracefully at once.
    """
    c = cluster("--workers", "1", "--drain-delay", "60", "--listen", LOOPBACK, APP)
    c.waitReady(1)
    c.signal(signal.SIGTERM)
    c.waitFor("draining for 60.0s")
    c.signal(signal.SIGTERM)
    assert c.wait() == 0
    assert c.matches(r"SIGTERM: stopping gracefully")


def test_bad_agent():
    result = run("--agent", "bogus:1", APP)
    assert result.returncode == 64
    assert result.stderr.splitlines() == [
        "twist cluster: error: --agent 'bogus:1': Unknown endpoint type: 'bogus'"
    ]
    result = run("--drain-delay", "soon", APP)
    assert (result.returncode, result.stderr) == (
        64,
        "twist cluster: error: --drain-delay takes a number, not 'soon'\n",
    )


def test_agent_address_in_use():
    """
    An agent address in use fails the start, with nothing left behind.
    """
    with socket.create_server(("127.0.0.1", 0)) as holder:
        port = holder.getsockname()[1]
        result = run("--agent", f"tcp:{port}:interface=127.0.0.1", "--listen", LOOPBACK, APP)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"twist cluster: error: cannot listen on --agent 'tcp:{port}:interface=127.0.0.1': "
        "Address already in use"
    ]
