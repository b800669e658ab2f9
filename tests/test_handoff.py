"""
The hand-off path in one process: the master's handles and control channel,
the worker's runtime, joined by a real socketpair; real TCP clients.  No
processes, so descriptors can be counted.
"""

from __future__ import annotations

import gc
import os
import socket
import weakref
from types import SimpleNamespace

import pytest_twisted
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python.failure import Failure

from twistcluster._common.endpoints import ListenSpec
from twistcluster._common.policies import SchedulingPolicy
from twistcluster._common.protocol import NewConn, adoptControlChannel
from twistcluster._master.control import MasterControl
from twistcluster._master.handles import Handles
from twistcluster._master.worker import Worker
from twistcluster._worker.runtime import WorkerRuntime
from twistcluster._worker.tracking import ClosedConnectionReports, OpenConnections

TIMEOUT = 10


def openDescriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


def whenControlLost(worker: Worker) -> Deferred[None]:
    """
    Fires once the master's end of C{worker}'s control channel has closed.
    """
    lost: Deferred[None] = Deferred()
    controlLost = worker.controlLost

    def recorded() -> None:
        controlLost()
        if not lost.called:
            lost.callback(None)

    worker.controlLost = recorded  # type: ignore[method-assign]
    return lost


def describeDescriptors() -> dict[str, str]:
    found = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            found[name] = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            pass
    return found


class FakeProcess:
    def __init__(self) -> None:
        self.pid = os.getpid()
        self.signals: list[object] = []

    def signalProcess(self, signal: object) -> None:
        self.signals.append(signal)


class Greeted(Protocol):
    def __init__(self) -> None:
        self.greeting: Deferred[bytes] = Deferred()
        self.closed: Deferred[None] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        if not self.greeting.called:
            self.greeting.callback(data)

    def connectionLost(self, reason: object) -> None:
        self.closed.callback(None)


def startPair(reactor, policy=SchedulingPolicy.RR):
    spec = ListenSpec.forTCP(0, interface="127.0.0.1")
    handles = Handles(reactor, [spec], policy)
    handle = handles.listen(spec, 0)
    worker = Worker(1, reactor, handles, shutdownTimeout=TIMEOUT)
    ready = worker.whenReady()
    masterEnd, workerEnd = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    control = MasterControl(worker, handles)
    adoptControlChannel(reactor, masterEnd.fileno(), Factory.forProtocol(lambda: control))
    masterEnd.close()
    worker.attach(FakeProcess(), control)
    runtime = WorkerRuntime(
        reactor,
        1,
        "tests.clusterapps.whoAmI",
        ["tcp:0:interface=127.0.0.1"],
        TIMEOUT,
        controlFD=workerEnd.detach(),
    )
    done = runtime.run()
    return handle, worker, ready, runtime, done


@pytest_twisted.inlineCallbacks
def test_handoff_closes_the_masters_copy_after_the_ack():
    from twisted.internet import reactor

    handle, worker, ready, runtime, done = startPair(reactor)
    yield ready.addTimeout(TIMEOUT, reactor)
    assert worker.state == "listening"
    before = openDescriptors()
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", handle.sockname["port"])
    clients = yield gatherResults([connectProtocol(endpoint, Greeted()) for _ in range(20)])
    greetings = yield gatherResults([c.greeting for c in clients]).addTimeout(TIMEOUT, reactor)
    assert all(g.startswith(b"worker=") and f"pid={os.getpid()}".encode() in g for g in greetings)
    yield handle.whenIdle().addTimeout(TIMEOUT, reactor)
    # Each connection: the client's socket and the worker's.  The master's
    # copy is closed after the ack (no third descriptor per connection).
    assert openDescriptors() - before == 2 * len(clients)

    # A graceful disconnect waits for the open connections, then ends.
    worker.disconnect()
    assert worker.state == "disconnecting"
    for client in clients:
        client.transport.loseConnection()
    yield done.addTimeout(TIMEOUT, reactor)
    yield handle.stopAccepting()
    assert openDescriptors() <= before


@pytest_twisted.inlineCallbacks
def test_unknown_key_is_refused_and_its_descriptor_closed():
    from twisted.internet import reactor

    handle, worker, ready, runtime, done = startPair(reactor)
    yield ready.addTimeout(TIMEOUT, reactor)
    a, b = socket.socketpair()
    try:
        before = openDescriptors()
        answer = yield worker.callRemote(NewConn, key="nosuch:0:4:-1:0", fds=[a.fileno()]).addTimeout(
            TIMEOUT, reactor
        )
        assert answer["accepted"] == [False]
        assert not answer["outOfDescriptors"]
        assert openDescriptors() == before
    finally:
        a.close()
        b.close()
    worker.disconnect()
    yield done.addTimeout(TIMEOUT, reactor)
    yield handle.stopAccepting()


@pytest_twisted.inlineCallbacks
def test_worker_may_not_listen_where_the_master_was_not_configured():
    from twisted.internet import reactor

    handles = Handles(reactor, granted=[ListenSpec.forTCP(0, interface="127.0.0.1")])
    worker = Worker(1, reactor, handles, shutdownTimeout=TIMEOUT)
    masterEnd, workerEnd = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    control = MasterControl(worker, handles)
    reactor.adoptStreamConnection(masterEnd.fileno(), socket.AF_UNIX, Factory.forProtocol(lambda: control))
    masterEnd.close()
    worker.attach(FakeProcess(), control)
    runtime = WorkerRuntime(
        reactor,
        1,
        "tests.clusterapps.whoAmI",
        ["tcp:0:interface=127.0.0.2"],
        TIMEOUT,
        controlFD=workerEnd.detach(),
    )
    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        done = runtime.run()
        failure = None
        try:
            yield done.addTimeout(TIMEOUT, reactor)
        except SystemExit as e:
            failure = e
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert failure is not None and failure.code == 3
    assert any(
        # The master's refusal, as a listen in one process fails.
        "could not start: CannotListenError: Couldn't listen on 127.0.0.2:0: "
        "the master was not configured to listen on 127.0.0.2:0:4:-1:0" in formatEvent(e)
        for e in events
    )
    assert list(handles) == []
    control.transport.loseConnection()


@pytest_twisted.inlineCallbacks
def test_connections_accepted_together_travel_in_one_box():
    """
    Connections accepted in one turn of the master's reactor go to a worker
    in one NewConn (a batch), and each is acked on its own.
    """
    from twisted.internet import reactor

    handle, worker, ready, runtime, done = startPair(reactor)
    yield ready.addTimeout(TIMEOUT, reactor)
    boxes = []
    sendNewConn = worker.sendNewConn

    def counting(key, fds, *arguments):
        boxes.append(list(fds))
        return sendNewConn(key, fds, *arguments)

    worker.sendNewConn = counting
    allTaken: Deferred[None] = Deferred()
    connectionTaken = worker.connectionTaken

    def counted():
        connectionTaken()
        if worker.connectionsTaken == 10:
            allTaken.callback(None)

    worker.connectionTaken = counted
    # The kernel completes these handshakes before the reactor runs again,
    # so the master's next accept pass finds all ten waiting.
    clients = [socket.create_connection(("127.0.0.1", handle.sockname["port"])) for _ in range(10)]
    try:
        yield allTaken.addTimeout(TIMEOUT, reactor)
        assert [len(fds) for fds in boxes] == [10]
    finally:
        for client in clients:
            client.close()
    worker.disconnect()
    yield done.addTimeout(TIMEOUT, reactor)
    yield handle.stopAccepting()


@pytest_twisted.inlineCallbacks
def test_none_gives_the_worker_the_listening_socket():
    """
    Under none the master binds and never accepts: QueryServer's answer
    carries the socket, the worker accepts on it, and the master's lent copy
    is closed once the worker listens.
    """
    from twisted.internet import reactor

    before = openDescriptors()
    beforeNames = describeDescriptors()
    handle, worker, ready, runtime, done = startPair(reactor, SchedulingPolicy.NONE)
    masterSocket = handle._socket.fileno()
    yield ready.addTimeout(TIMEOUT, reactor)
    assert not [r for r in reactor.getReaders() if r.fileno() == masterSocket]
    assert handle._lent == {}
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", handle.sockname["port"])
    client = yield connectProtocol(endpoint, Greeted())
    greeting = yield client.greeting.addTimeout(TIMEOUT, reactor)
    assert greeting.startswith(b"worker=")

    controlClosed = whenControlLost(worker)
    worker.disconnect()
    client.transport.loseConnection()
    yield client.closed.addTimeout(TIMEOUT, reactor)
    yield done.addTimeout(TIMEOUT, reactor)
    yield controlClosed.addTimeout(TIMEOUT, reactor)
    yield handle.stopAccepting()
    after = describeDescriptors()
    assert openDescriptors() <= before, {k: v for k, v in after.items() if beforeNames.get(k) != v}


@pytest_twisted.inlineCallbacks
def test_least_conn_worker_reports_closed_connections():
    """
    Under least-conn the worker tells the master, in a batch, how many of
    its connections ended; the master counts them off.
    """
    from twisted.internet import reactor

    handle, worker, ready, runtime, done = startPair(reactor, SchedulingPolicy.LEAST_CONN)
    yield ready.addTimeout(TIMEOUT, reactor)
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", handle.sockname["port"])
    clients = yield gatherResults([connectProtocol(endpoint, Greeted()) for _ in range(3)])
    yield gatherResults([c.greeting for c in clients]).addTimeout(TIMEOUT, reactor)
    strategy = handle.scheduler.strategy
    assert strategy.live(worker) == 3

    reported: Deferred[int] = Deferred()
    original = handle.connectionsClosed

    def connectionsClosed(who, count):
        original(who, count)
        if strategy.live(worker) == 1 and not reported.called:
            reported.callback(count)

    handle.connectionsClosed = connectionsClosed
    clients[0].transport.loseConnection()
    clients[1].transport.loseConnection()
    yield reported.addTimeout(TIMEOUT, reactor)

    worker.disconnect()
    clients[2].transport.loseConnection()
    yield done.addTimeout(TIMEOUT, reactor)
    yield handle.stopAccepting()


def test_a_lost_connection_is_freed_without_the_garbage_collector():
    """
    The worker counts a connection open until its protocol's connectionLost;
    that leaves no reference cycle behind, so each connection (transport,
    socket, buffers) is freed as it ends, not by the cyclic collector.
    """
    runtime = WorkerRuntime(Clock(), 1)
    port = SimpleNamespace(reportClosed=True, key="tcp:127.0.0.1:0:4:-1:0")
    lost = []

    class Counted(Protocol):
        def connectionLost(self, reason):
            lost.append(reason)

    protocol = Counted()
    runtime.connectionOpened(port, protocol)
    assert runtime.openConnections.protocols == {protocol}
    freed = weakref.ref(protocol)
    gc.disable()
    try:
        protocol.connectionLost(Failure(ConnectionDone()))
        del protocol
        assert freed() is None
    finally:
        gc.enable()
    assert len(lost) == 1 and runtime.openConnections.protocols == set()


def test_a_drain_waits_for_the_last_connection_and_survives_its_timeout():
    """
    whenAllClosed fires as the last open connection ends; a waiter that gave
    up (the shutdown timeout) leaves the connection's end working.
    """
    clock = Clock()
    opened = OpenConnections(ClosedConnectionReports(clock, lambda *a, **k: None))
    port = SimpleNamespace(reportClosed=False, key=None)
    first, second = Protocol(), Protocol()
    opened.opened(port, first)
    opened.opened(port, second)
    drained = opened.whenAllClosed()
    first.connectionLost(Failure(ConnectionDone()))
    assert not drained.called and len(opened) == 1
    second.connectionLost(Failure(ConnectionDone()))
    assert drained.called and len(opened) == 0

    late = Protocol()
    opened.opened(port, late)
    gaveUp = opened.whenAllClosed().addTimeout(5, clock, lambda *a: None)
    clock.advance(5)
    assert gaveUp.called
    late.connectionLost(Failure(ConnectionDone()))
    assert len(opened) == 0 and opened.whenAllClosed().called
