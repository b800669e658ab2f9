"""
Ports of Node's cluster tests about a worker's life (node-cluster.md §3,
#1-#13): the primary is a PrimaryCluster in this process, the workers are
real processes running tests/nodeworker.py.  Each test names the Node test it
ports.
"""

from __future__ import annotations

import os
import signal

import pytest_twisted
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol

from tests._primary import TIMEOUT, processGone
from twistcluster import ListeningAddress


class Client(Protocol):
    """
    A client that collects what it is sent.
    """

    def __init__(self) -> None:
        from twisted.internet.defer import Deferred

        self.received = b""
        self._waiting: list[tuple[bytes, Deferred[None]]] = []
        self.closed: Deferred[None] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        for entry in list(self._waiting):
            if entry[0] in self.received:
                self._waiting.remove(entry)
                entry[1].callback(None)

    def expect(self, data: bytes):
        from twisted.internet import reactor
        from twisted.internet.defer import Deferred, succeed

        if data in self.received:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._waiting.append((data, d))
        return d.addTimeout(TIMEOUT, reactor)

    def connectionLost(self, reason: object) -> None:
        self.closed.callback(None)


def connectTo(port: int):
    from twisted.internet import reactor

    return connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), Client())


def stateAt(worker, *names: str) -> list[tuple[str, str]]:
    """
    Record C{worker.state} at each of its events C{names}.
    """
    seen: list[tuple[str, str]] = []
    for name in names:
        worker.on(name, lambda *args, name=name: seen.append((name, worker.state)))
    return seen


@pytest_twisted.inlineCallbacks
def test_basic_and_listening_port(primary):
    """
    Node: test-cluster-basic, test-cluster-listening-port.  One worker
    listens on 127.0.0.1 port 0 and the primary kills it once it listens:
    the cluster's events come in order, each with the same worker; the
    states go spawning (Node's 'none'), online, listening, dead; the
    'listening' address is Node's, with the port the kernel chose; 'exit'
    carries the process's exit code and signal.
    """
    primary.setupPrimary(args=["listen"])
    worker = primary.fork()
    assert worker.id == 1
    states = [worker.state]
    seen = stateAt(worker, "online", "listening", "exit")
    worker.on("listening", lambda address: worker.kill())
    _, code, sig = yield primary.recorder.wait("exit")
    events = [(n, args) for n, args in primary.recorder.events if n not in ("setup", "message")]
    assert [n for n, _ in events] == ["fork", "online", "listening", "disconnect", "exit"]
    assert all(args[0] is worker for _, args in events)
    assert states + [s for _, s in seen] == ["spawning", "online", "listening", "dead"]
    (address,) = [args[1] for n, args in events if n == "listening"]
    assert address == ListeningAddress("127.0.0.1", address.port, 4, None)
    assert address.port > 0
    assert (yield worker.whenListening()) == address
    exitArgs = [args[1:] for n, args in events if n == "exit"][0]
    assert exitArgs == (worker.process.exitCode, worker.process.signalCode) == (code, sig)
    assert primary.workers == {}


@pytest_twisted.inlineCallbacks
def test_worker_death(primary):
    """
    Node: test-cluster-worker-death.  The worker exits 42 at once: the
    worker's 'exit' has (42, None), and the cluster's 'exit' the same worker.
    """
    primary.setupPrimary(args=["exit", "42"])
    worker = primary.fork()
    workerExit = []
    worker.on("exit", lambda code, signal: workerExit.append((code, signal)))
    exited = yield primary.recorder.wait("exit")
    assert exited == (worker, 42, None)
    assert workerExit == [(42, None)]
    assert worker.isDead()


@pytest_twisted.inlineCallbacks
def test_worker_exit(primary):
    """
    Node: test-cluster-worker-exit.  The worker exits 42 after it listens:
    one 'disconnect' and one 'exit' on the cluster and on the worker; the
    state is 'disconnected' at 'disconnect'; the exit was not after a
    disconnect; the process is gone.
    """
    primary.setupPrimary(args=["listenThenExit", "42"])
    worker = primary.fork()
    seen = stateAt(worker, "disconnect", "exit")
    yield primary.recorder.wait("exit")
    assert primary.recorder.names("disconnect", "exit") == ["disconnect", "exit"]
    assert seen == [("disconnect", "disconnected"), ("exit", "dead")]
    assert worker.exitedAfterDisconnect is False
    assert (worker.process.exitCode, worker.process.signalCode) == (42, None)
    assert processGone(worker.process.pid)


@pytest_twisted.inlineCallbacks
def test_worker_kill_signal(primary):
    """
    Node: test-cluster-worker-kill-signal.  The primary kills a listening
    worker with SIGKILL: one 'disconnect', one 'exit' with signal SIGKILL and
    no code; not an exit after a disconnect.
    """
    primary.setupPrimary(args=["listen"])
    worker = primary.fork()
    seen = stateAt(worker, "disconnect", "exit")
    yield worker.whenListening().addTimeout(TIMEOUT, primary._reactor)
    worker.kill("SIGKILL")
    _, code, sig = yield primary.recorder.wait("exit")
    assert (code, sig) == (None, signal.SIGKILL)
    assert sig.name == "SIGKILL"
    assert seen == [("disconnect", "disconnected"), ("exit", "dead")]
    assert primary.recorder.names("disconnect", "exit") == ["disconnect", "exit"]
    assert worker.exitedAfterDisconnect is False
    assert processGone(worker.process.pid)


@pytest_twisted.inlineCallbacks
def test_worker_disconnect_and_forced_exit(primary):
    """
    Node: test-cluster-worker-disconnect, test-cluster-worker-forced-exit (a).
    The primary disconnects a listening worker whose 'disconnect' handler
    exits 42: the exit code proves the worker saw 'disconnect'; the exit was
    after a disconnect; the cluster's 'disconnect' and 'exit' fire.
    """
    primary.setupPrimary(args=["exitOnDisconnect", "42"])
    worker = primary.fork()
    seen = stateAt(worker, "disconnect")
    yield worker.whenListening().addTimeout(TIMEOUT, primary._reactor)
    assert worker.disconnect() is worker
    _, code, sig = yield primary.recorder.wait("exit")
    assert (code, sig) == (42, None)
    assert worker.exitedAfterDisconnect is True
    assert seen == [("disconnect", "disconnected")]
    assert primary.recorder.names("disconnect", "exit") == ["disconnect", "exit"]


@pytest_twisted.inlineCallbacks
def test_forced_exit_when_the_channel_closes(primary):
    """
    Node: test-cluster-worker-forced-exit (b).  The primary closes the
    control channel itself (Node's worker.process.disconnect()): the worker
    takes it as its primary gone and exits 0 at once.
    """
    primary.setupPrimary(args=["listen"])
    worker = primary.fork()
    yield worker.whenListening().addTimeout(TIMEOUT, primary._reactor)
    worker.process.disconnect()
    _, code, sig = yield primary.recorder.wait("exit")
    assert (code, sig) == (0, None)
    assert worker.exitedAfterDisconnect is False


@pytest_twisted.inlineCallbacks
def test_worker_wait_server_close(primary):
    """
    Node: test-cluster-worker-wait-server-close.  A client is connected when
    the primary disconnects the worker: the worker keeps serving it, and its
    channel closes ('disconnect') only after the client has gone.
    """
    from twisted.internet import reactor

    primary.setupPrimary(args=["listen"])
    worker = primary.fork()
    address = yield worker.whenListening().addTimeout(TIMEOUT, reactor)
    client = yield connectTo(address.port)
    client.transport.write(b"before\n")
    yield client.expect(b"before\n")
    worker.disconnect()
    # A message's answer comes after the worker has handled Disconnect (AMP
    # keeps order): it has closed its server by then...
    delivered: Deferred[object] = Deferred()
    assert worker.send("after the disconnect", delivered.callback)
    assert (yield delivered.addTimeout(TIMEOUT, reactor)) is None
    # ...and still serves the client, with its channel open.
    client.transport.write(b"after\n")
    yield client.expect(b"after\n")
    assert "disconnect" not in primary.recorder.names()
    client.transport.loseConnection()
    yield client.closed
    primary.recorder.record("clientClosed")
    yield primary.recorder.wait("exit")
    assert primary.recorder.names("clientClosed", "disconnect", "exit") == [
        "clientClosed",
        "disconnect",
        "exit",
    ]


@pytest_twisted.inlineCallbacks
def test_kill_and_disconnect_from_the_worker(makePrimary):
    """
    Node: test-cluster-kill-disconnect.  A worker calls cluster.worker.kill()
    or cluster.worker.disconnect() itself: the primary sees an exit after a
    disconnect in both 'disconnect' and 'exit'.  (kill() ends the worker with
    its signal, SIGTERM, as Node's documentation says; Node's code exits 0.)
    """
    results = {}
    for how in ("kill", "disconnect"):
        primary = makePrimary()
        primary.setupPrimary(args=["leave", how])
        worker = primary.fork()
        flags: list[bool] = []
        for name in ("disconnect", "exit"):
            worker.on(name, lambda *a, worker=worker, flags=flags: flags.append(worker.exitedAfterDisconnect))
        _, code, sig = yield primary.recorder.wait("exit")
        assert flags == [True, True], how
        results[how] = (code, sig)
    assert results == {"kill": (None, signal.SIGTERM), "disconnect": (0, None)}


@pytest_twisted.inlineCallbacks
def test_disconnect_exited_after_disconnect_race(primary):
    """
    Node: test-cluster-disconnect-exitedAfterDisconnect-race.  After
    cluster.worker.disconnect() the worker's 'disconnect' has not fired yet
    (it waits for the primary's answer); the worker exits 0.
    """
    primary.setupPrimary(args=["disconnectRace"])
    worker = primary.fork()
    report = yield primary.recorder.message(worker, "sameTick")
    assert report == {"event": "sameTick", "seen": [], "state": "disconnecting"}
    _, code, sig = yield primary.recorder.wait("exit")
    assert (code, sig) == (0, None)
    assert worker.exitedAfterDisconnect is True


@pytest_twisted.inlineCallbacks
def test_disconnect(primary):
    """
    Node: test-cluster-disconnect.  Two workers, two servers each (ports P
    and Q, each shared by both); both serve; cluster.disconnect(callback)
    ends them, and the callback fires; then a second cycle listens on P and
    Q again: the first cycle left no listening socket behind.
    """
    from twisted.internet import reactor

    descriptions = ["tcp:0:interface=127.0.0.1", "tcp:0:interface=127.0.0.1"]
    for _cycle in range(2):
        primary.setupPrimary(args=["listen", *descriptions])
        workers = [primary.fork(), primary.fork()]
        reports = yield gatherResults(
            [primary.recorder.message(w, "listening", n) for w in workers for n in (1, 2)]
        )
        ports = sorted({r["port"] for r in reports})
        assert len(ports) == 2
        for port in ports:
            client = yield connectTo(port)
            client.transport.write(b"ping")
            yield client.expect(b"ping")
            client.transport.loseConnection()
        called: list[bool] = []
        yield primary.disconnect(lambda called=called: called.append(True)).addTimeout(TIMEOUT, reactor)
        assert called == [True]
        assert primary.workers == {}
        assert all(w.isDead() and w.exitedAfterDisconnect for w in workers)
        descriptions = [f"tcp:{port}:interface=127.0.0.1" for port in ports]


@pytest_twisted.inlineCallbacks
def test_disconnect_idle_worker_no_workers_before_exit(makePrimary):
    """
    Node: test-cluster-disconnect-idle-worker, -with-no-workers,
    -before-exit.  cluster.disconnect()'s callback fires with a worker that
    never listened, with no worker at all, and after a worker was already
    disconnected; no error, and no worker is left.
    """
    from twisted.internet import reactor

    none = makePrimary()
    called = []
    yield none.disconnect(lambda: called.append("none")).addTimeout(TIMEOUT, reactor)

    idle = makePrimary()
    idle.setupPrimary(args=["describe"])
    idle.fork()
    yield idle.recorder.wait("online")
    yield idle.disconnect(lambda: called.append("idle")).addTimeout(TIMEOUT, reactor)

    before = makePrimary()
    before.setupPrimary(args=["listen"])
    worker = before.fork()
    yield worker.whenListening().addTimeout(TIMEOUT, reactor)
    worker.disconnect()
    yield before.disconnect(lambda: called.append("before")).addTimeout(TIMEOUT, reactor)

    assert called == ["none", "idle", "before"]
    assert none.workers == idle.workers == before.workers == {}


@pytest_twisted.inlineCallbacks
def test_concurrent_disconnect(primary):
    """
    Node: test-cluster-concurrent-disconnect.  Three workers are
    disconnected while messages fly both ways: every one exits 0.
    """
    primary.setupPrimary(args=["chatter"])
    workers = [primary.fork() for _ in range(3)]

    def chatter(worker, message):
        if message.get("event") == "chat":
            worker.send({"n": message["n"]})
            if message["n"] == 25:
                worker.disconnect()

    primary.on("message", chatter)
    exits = yield gatherResults([w.whenExited() for w in workers]).addTimeout(TIMEOUT, primary._reactor)
    assert exits == [(0, None)] * 3
    assert all(
        os.path.exists(f"/proc/{w.process.pid}") is False or processGone(w.process.pid) for w in workers
    )
