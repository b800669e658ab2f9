"""
The cluster API without processes: which face `cluster` has, how fork()
starts a worker, how a worker's life becomes the cluster's events, and the
small pieces (signals, routed listens, the master's refusals as errors).
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import sys
from typing import Any

import pytest_twisted
from twisted.internet.error import CannotListenError, ProcessTerminated
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from twistcluster import NotAWorker, PrimaryCluster, WorkerCluster, makeCluster
from twistcluster._api.workerface import WorkerGone
from twistcluster._common.endpoints import ListenSpec
from twistcluster._common.protocol import ListenRefused
from twistcluster._common.signals import toSignal
from twistcluster._worker.listening import ClusterReactor
from twistcluster._worker.routing import listenError

SCRIPT = os.path.abspath(__file__)


class FakeProcess:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.signals: list[Any] = []

    def signalProcess(self, signal: Any) -> None:
        self.signals.append(signal)

    def closeStdin(self) -> None:
        pass


class ProcessReactor(MemoryReactorClock):
    """
    A memory reactor that records the processes it is asked to spawn.
    """

    def __init__(self) -> None:
        super().__init__()
        self.spawned: list[dict[str, Any]] = []

    def adoptStreamConnection(self, fileDescriptor: int, addressFamily: int, factory: Any) -> None:
        # The control channel, connected to nothing.
        factory.buildProtocol(None).makeConnection(StringTransport())

    def spawnProcess(self, protocol: Any, executable: str, args: list[str], **kwargs: Any) -> FakeProcess:
        process = FakeProcess(1000 + len(self.spawned))
        self.spawned.append(dict(protocol=protocol, executable=executable, args=args, **kwargs))
        protocol.makeConnection(process)
        return process


def ended(reactor: ProcessReactor, worker: Any, code: int | None, sig: int | None) -> None:
    """
    The process of C{worker} (the n-th spawned) ends, as the reactor says.
    """
    reactor.spawned[worker.id - 1]["protocol"].processEnded(Failure(ProcessTerminated(code, sig)))


def sayOnline(reactor: ProcessReactor, worker: Any) -> None:
    """
    C{worker} (the n-th spawned) says it is online, on its control channel.
    """
    (channel,) = [
        reader.protocol
        for reader in reactor.getReaders()
        if getattr(getattr(reader, "protocol", None), "_worker", None) is not None
        and reader.protocol._worker.id == worker.id
    ]
    channel.online(workerId=worker.id, pid=worker.process.pid)


class RoleTests(SynchronousTestCase):
    def test_theVariableMakesAWorker(self) -> None:
        self.assertIsInstance(makeCluster({}), PrimaryCluster)
        self.assertIsInstance(makeCluster({"TWISTCLUSTER_WORKER_ID": "3"}), WorkerCluster)
        primary = makeCluster({})
        self.assertEqual((primary.isPrimary, primary.isMaster, primary.isWorker), (True, True, False))
        self.assertIsNone(primary.worker)
        self.assertEqual((primary.SCHED_NONE, primary.SCHED_RR), (1, 2))

    def test_noChannelNoWorker(self) -> None:
        """
        The variable without a control channel on fd 3 (a grandchild): using
        cluster says so in one line.
        """
        r, w = os.pipe()
        self.addCleanup(os.close, r)
        self.addCleanup(os.close, w)
        worker = WorkerCluster("3", controlFD=r)
        error = self.assertRaises(NotAWorker, lambda: worker.isWorker)
        self.assertIn(
            "TWISTCLUSTER_WORKER_ID='3' is set, but this process has no control channel", str(error)
        )


class PrimaryTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = ProcessReactor()
        self.primary = PrimaryCluster(self.reactor, environ={}, argv=[SCRIPT, "a", "b"])
        self.events: list[tuple[str, tuple]] = []
        for name in ("fork", "online", "disconnect", "exit", "setup", "message"):
            self.primary.on(name, lambda *a, name=name: self.events.append((name, a)))

    def test_forkRunsTheSameScript(self) -> None:
        worker = self.primary.fork({"EXTRA": 1})
        (spawned,) = self.reactor.spawned
        self.assertEqual(spawned["args"], [sys.executable, SCRIPT, "a", "b"])
        self.assertEqual(spawned["env"]["TWISTCLUSTER_WORKER_ID"], "1")
        self.assertEqual(spawned["env"]["EXTRA"], "1")
        self.assertEqual(spawned["env"]["PATH"], os.environ["PATH"])
        # Not silent: the worker shares the primary's stdout and stderr.
        self.assertEqual({k: v for k, v in spawned["childFDs"].items() if k != 3}, {0: "w", 1: 1, 2: 2})
        self.assertEqual(self.primary.workers, {1: worker})
        self.assertEqual(worker.process.pid, 1000)

    def test_silentRelaysOutput(self) -> None:
        self.primary.setupPrimary(silent=True, execArgv=["-X", "dev"], cwd="/", uid=os.getuid())
        self.primary.fork()
        (spawned,) = self.reactor.spawned
        self.assertEqual(spawned["args"][:4], [sys.executable, "-X", "dev", SCRIPT])
        self.assertEqual((spawned["childFDs"][1], spawned["childFDs"][2]), ("r", "r"))
        self.assertEqual((spawned["path"], spawned["uid"]), ("/", os.getuid()))

    def test_eventsInNodesOrder(self) -> None:
        """
        'fork' on the next tick (or before anything else the worker says),
        then 'online', 'disconnect' and 'exit', each with the same worker; a
        worker that exits leaves cluster.workers.
        """
        worker = self.primary.fork()
        self.assertEqual(self.events, [])
        sayOnline(self.reactor, worker)
        self.reactor.advance(0)
        ended(self.reactor, worker, None, signal.SIGKILL)
        names = [n for n, _ in self.events]
        self.assertEqual(names, ["fork", "online", "setup", "disconnect", "exit"])
        self.assertTrue(all(a[0] is worker for n, a in self.events if n != "setup"))
        self.assertEqual(self.events[-1][1], (worker, None, signal.SIGKILL))
        self.assertEqual(self.primary.workers, {})
        self.assertEqual(worker.state, "dead")
        self.assertEqual(worker.process.signalCode, signal.SIGKILL)

    def test_deferredForms(self) -> None:
        worker = self.primary.fork()
        online, listening, disconnected = (
            worker.whenOnline(),
            worker.whenListening(),
            worker.whenDisconnected(),
        )
        sayOnline(self.reactor, worker)
        self.assertIsNone(self.successResultOf(online))
        ended(self.reactor, worker, 3, None)
        self.assertIsNone(self.successResultOf(disconnected))
        self.assertIn(
            "exited before it was listening", str(self.failureResultOf(listening, WorkerGone).value)
        )
        self.assertEqual(self.successResultOf(worker.whenExited()), (3, None))

    def test_disconnectFiresWhenEveryWorkerIsGone(self) -> None:
        workers = [self.primary.fork(), self.primary.fork()]
        called = []
        done = self.primary.disconnect(lambda: called.append(True))
        self.assertTrue(all(w.exitedAfterDisconnect for w in workers))
        ended(self.reactor, workers[0], 0, None)
        self.assertNoResult(done)
        ended(self.reactor, workers[1], 0, None)
        self.successResultOf(done)
        self.assertEqual(called, [True])

    def test_disconnectWithNoWorkers(self) -> None:
        done = self.primary.disconnect()
        self.assertNoResult(done)
        self.reactor.advance(0)
        self.successResultOf(done)

    def test_killSendsTheSignalNow(self) -> None:
        worker = self.primary.fork()
        worker.kill()
        worker.kill("SIGKILL")
        worker.kill(9)
        self.assertEqual(worker.process.transport.signals, [signal.SIGTERM, signal.SIGKILL, signal.SIGKILL])
        self.assertFalse(worker.exitedAfterDisconnect)

    def test_sendWhenNotConnected(self) -> None:
        worker = self.primary.fork()
        ended(self.reactor, worker, 0, None)
        self.assertFalse(worker.send({"n": 1}))
        self.assertEqual(self.primary.broadcast("all"), 0)

    def test_schedulingPolicy(self) -> None:
        self.assertEqual(PrimaryCluster(self.reactor, environ={}).schedulingPolicy, 2)
        none = PrimaryCluster(self.reactor, environ={"TWISTCLUSTER_SCHED_POLICY": "none"}, argv=[SCRIPT])
        self.assertEqual(none.schedulingPolicy, none.SCHED_NONE)
        leastConn = PrimaryCluster(self.reactor, environ={"TWISTCLUSTER_SCHED_POLICY": "least-conn"})
        self.assertEqual(leastConn.schedulingPolicy, leastConn.SCHED_LEAST_CONN)
        bad = PrimaryCluster(self.reactor, environ={"TWISTCLUSTER_SCHED_POLICY": "random"})
        error = self.assertRaises(ValueError, lambda: bad.schedulingPolicy)
        self.assertIn("'random' is not a scheduling policy", str(error))
        none.fork()
        self.assertEqual(none._handles.policy.value, "none")
        self.assertRaises(ValueError, setattr, none, "schedulingPolicy", none.SCHED_RR)
        self.assertRaises(ValueError, setattr, leastConn, "schedulingPolicy", 7)


class RoutingTests(SynchronousTestCase):
    def test_installRoutesTheReactorsOwnListens(self) -> None:
        reactor = MemoryReactorClock()
        routed = ClusterReactor(reactor, channel=None)  # type: ignore[arg-type]
        routed.install()
        for name in ("listenTCP", "listenSSL", "listenUNIX", "listenUDP"):
            self.assertEqual(getattr(reactor, name), getattr(routed, name))
        # The direct reactor still listens by itself (exclusive listens).
        routed.direct.listenTCP(0, None)
        self.assertEqual(len(reactor.tcpServers), 1)

    def test_refusalsBecomeCannotListenError(self) -> None:
        spec = ListenSpec.forTCP(8080, interface="127.0.0.1")
        refusal = Failure(
            ListenRefused("Couldn't listen on 127.0.0.1:8080: [Errno 98] Address already in use.")
        )
        error = listenError(spec, refusal).value
        self.assertIsInstance(error, CannotListenError)
        self.assertEqual(error.socketError.errno, errno.EADDRINUSE)
        self.assertEqual((error.interface, error.port), ("127.0.0.1", 8080))
        other = listenError(spec, Failure(ListenRefused("not configured"))).value
        self.assertIn("not configured", str(other))

    def test_signalNames(self) -> None:
        self.assertEqual(toSignal("SIGKILL"), signal.SIGKILL)
        self.assertEqual(toSignal("term"), signal.SIGTERM)
        self.assertEqual(toSignal(2), signal.SIGINT)
        self.assertRaises(ValueError, toSignal, "SIGNOPE")


class FakeMaster:
    """
    The master's side of QueryServer for a datagram listen: the answer
    carries the bound socket.
    """

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.closed: list[Any] = []

    def queryServer(self, spec: ListenSpec, index: int) -> Any:
        from twisted.internet.defer import succeed

        sockname = {"address": "127.0.0.1", "port": self.sock.getsockname()[1], "addressType": 4}
        return succeed({"key": spec.key(index), "sockname": sockname, "fds": [os.dup(self.sock.fileno())]})

    def portListening(self, port: Any) -> None:
        pass

    def portClosed(self, port: Any) -> None:
        self.closed.append(port.key)

    def portRefused(self, port: Any, reason: Any) -> None:
        raise AssertionError(reason)


@pytest_twisted.inlineCallbacks
def test_udp_listens_adopt_the_masters_socket():
    """
    listenUDP in a worker: the master's answer carries the bound datagram
    socket, which the worker adopts (closing the copy it received), and
    datagrams reach the protocol.  (The master's shared datagram handle is
    the policies work's, issue 3.)
    """
    from twisted.internet import reactor
    from twisted.internet.defer import Deferred
    from twisted.internet.protocol import DatagramProtocol

    class Received(DatagramProtocol):
        def __init__(self) -> None:
            self.got: Deferred[bytes] = Deferred()

        def datagramReceived(self, data: bytes, address: Any) -> None:
            self.got.callback(data)

    master = FakeMaster()
    before = len(os.listdir("/proc/self/fd"))
    protocol = Received()
    port = ClusterReactor(reactor, master).listenUDP(0, protocol, interface="127.0.0.1")
    yield port.whenListening()
    # The adopted socket only: the descriptor that came in was closed.
    assert len(os.listdir("/proc/self/fd")) == before + 1
    master.sock.sendto(b"hello", ("127.0.0.1", port.getHost().port))
    assert (yield protocol.got.addTimeout(10, reactor)) == b"hello"
    yield port.stopListening()
    assert master.closed == [port.key]
    master.sock.close()
    assert len(os.listdir("/proc/self/fd")) == before - 1
