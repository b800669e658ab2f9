"""
Ports of Node's cluster tests about listening (node-cluster.md §3, #14-#35
where they apply): the primary is a PrimaryCluster in this process (or a
script of its own where it must die or not be root), the workers real
processes running tests/nodeworker.py.  Each test names the Node test it
ports.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet.defer import gatherResults

from tests._cluster import runToEnd
from tests._cluster import waitUntil as waitUntilSync
from tests._primary import TIMEOUT, freePort, processGone
from tests.test_node_lifecycle import connectTo

PRIMARY_SCRIPT = str(Path(__file__).with_name("nodeprimary.py"))


@pytest_twisted.inlineCallbacks
def test_eaddrinuse(primary):
    """
    Node: test-cluster-eaddrinuse.  A process outside the cluster holds the
    port: the worker's listen fails with EADDRINUSE; once the port is free,
    the worker's retry succeeds (the primary kept nothing of the failure).
    """
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    primary.setupPrimary(args=["retryListen", str(port)])
    worker = primary.fork()
    try:
        report = yield primary.recorder.message(worker, "error")
    finally:
        holder.close()
    assert report["error"] == "EADDRINUSE"
    worker.send("retry")
    report = yield primary.recorder.message(worker, "listening")
    assert report["port"] == port


@pytest_twisted.inlineCallbacks
def test_bind_twice(makePrimary):
    """
    Node: test-cluster-bind-twice.  Two independent clusters on one port:
    the second cluster's worker gets EADDRINUSE.
    """
    first, second = makePrimary(), makePrimary()
    first.setupPrimary(args=["listen"])
    address = yield first.fork().whenListening().addTimeout(TIMEOUT, first._reactor)
    second.setupPrimary(args=["listen", f"tcp:{address.port}:interface=127.0.0.1"])
    worker = second.fork()
    report = yield second.recorder.message(worker, "error")
    assert report["error"] == "EADDRINUSE"


@pytest.mark.parametrize("policy", ["rr", "none"])
def test_bind_privileged_port(policy, tmp_path):
    """
    Node: test-cluster-bind-privileged-port,
    test-cluster-shared-handle-bind-privileged-port.  A worker listens on
    port 42 and the primary may not bind it: the worker's error is EACCES,
    and it exits 0 (it disconnects).  As root, the primary runs without
    CAP_NET_BIND_SERVICE.
    """
    command = [sys.executable, PRIMARY_SCRIPT, "privileged"]
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root, and setpriv is missing to drop CAP_NET_BIND_SERVICE")
        command = [setpriv, "--bounding-set", "-net_bind_service", *command]
    env = dict(os.environ, TWISTCLUSTER_SCHED_POLICY=policy)
    result = runToEnd(command, 60, cwd=tmp_path, env=env)
    assert result.stdout.splitlines() == ["error EACCES", "exit 0"], result.stderr
    assert result.returncode == 0


@pytest.mark.parametrize("scenario", ["primaryKill", "primaryError"])
def test_primary_kill_and_error(scenario, tmp_path):
    """
    Node: test-cluster-primary-kill, test-cluster-primary-error.  The primary
    exits (0) or fails (1) while its workers run: every worker is gone soon
    after.
    """
    process = subprocess.Popen(
        [sys.executable, PRIMARY_SCRIPT, scenario],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    try:
        line = process.stdout.readline()
        assert line.startswith("pids "), process.communicate(timeout=30)
        pids = [int(p) for p in line.split()[1:]]
        assert process.wait(30) == (0 if scenario == "primaryKill" else 1)
        waitUntilSync(lambda: all(processGone(pid) for pid in pids), 30, "the workers to exit")
    finally:
        process.kill()
        process.communicate()


@pytest_twisted.inlineCallbacks
def test_shared_handle_bind_error(primary):
    """
    Node: test-cluster-shared-handle-bind-error.  SCHED_NONE, and the
    primary itself holds the port: the worker's error is EADDRINUSE, and it
    exits 0.
    """
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    primary.schedulingPolicy = primary.SCHED_NONE
    primary.setupPrimary(args=["listenOrLeave", f"tcp:{holder.getsockname()[1]}:interface=127.0.0.1"])
    try:
        worker = primary.fork()
        report = yield primary.recorder.message(worker, "error")
        assert report["error"] == "EADDRINUSE"
        assert (yield worker.whenExited()) == (0, None)
    finally:
        holder.close()


@pytest_twisted.inlineCallbacks
def test_shared_leak_and_disconnect_race(primary):
    """
    Node: test-cluster-shared-leak, test-cluster-disconnect-race.
    SCHED_NONE: a second worker is forked and listens while the first
    disconnects; both serve in turn, both exit 0, and once the cluster is
    disconnected nothing is left bound (the port can be bound again).
    """
    from twisted.internet import reactor

    primary.schedulingPolicy = primary.SCHED_NONE
    primary.setupPrimary(args=["listen"])
    first = primary.fork()
    address = yield first.whenListening().addTimeout(TIMEOUT, reactor)
    first.disconnect()
    second = primary.fork()
    assert (yield second.whenListening().addTimeout(TIMEOUT, reactor)).port == address.port
    client = yield connectTo(address.port)
    client.transport.write(b"still served")
    yield client.expect(b"still served")
    client.transport.loseConnection()
    yield primary.disconnect().addTimeout(TIMEOUT, reactor)
    exits = yield gatherResults([w.whenExited() for w in (first, second)])
    assert exits == [(0, None), (0, None)]
    assert list(primary._handles) == []
    with socket.socket() as rebind:
        rebind.bind(("127.0.0.1", address.port))


@pytest_twisted.inlineCallbacks
def test_listen_twice_same_port(primary):
    """
    Node: test-cluster-listen-twice-same-port.  One worker, two servers on
    one fixed port: the second fails with EADDRINUSE; the first closes
    cleanly and the worker exits 0.
    """
    primary.setupPrimary(args=["listenTwice", str(freePort())])
    worker = primary.fork()
    report = yield primary.recorder.message(worker, "second")
    assert report["error"] == "EADDRINUSE"
    _, code, sig = yield primary.recorder.wait("exit")
    assert (code, sig) == (0, None)


@pytest.mark.parametrize("policy", ["SCHED_RR", "SCHED_NONE"])
@pytest_twisted.inlineCallbacks
def test_child_index_and_server_restart(primary, policy):
    """
    Node: test-cluster-child-index-net, test-cluster-server-restart-rr,
    test-cluster-server-restart-none.  Worker 1 listens on port 0; worker 2
    listens on port 0, closes, listens on port 0 again and closes, twice
    over: every listen is granted (the per-worker listen index is given
    back), worker 2 exits 0, then worker 1 is disconnected and exits 0.
    """
    primary.schedulingPolicy = getattr(primary, policy)
    primary.setupPrimary(args=["listen"])
    first = primary.fork()
    shared = yield first.whenListening().addTimeout(TIMEOUT, primary._reactor)
    primary.setupPrimary(args=["relisten", "2"])
    second = primary.fork()
    reports = yield gatherResults([primary.recorder.message(second, "listening", n) for n in range(1, 5)])
    assert [r["port"] for r in reports] == [shared.port] * 4
    assert (yield second.whenExited()) == (0, None)
    first.disconnect()
    assert (yield first.whenExited()) == (0, None)


@pytest_twisted.inlineCallbacks
def test_exclusive_random_ports(primary):
    """
    Node: test-net-listen-exclusive-random-ports.  Two workers listen on
    port 0 with exclusive=True (not through the primary): two different
    ports.
    """
    primary.setupPrimary(args=["exclusive"])
    workers = [primary.fork(), primary.fork()]
    reports = yield gatherResults([primary.recorder.message(w, "listening") for w in workers])
    ports = [r["port"] for r in reports]
    assert all(isinstance(p, int) and p > 0 for p in ports)
    assert ports[0] != ports[1]
    assert primary.recorder.names("listening") == []


@pytest_twisted.inlineCallbacks
def test_shared_and_exclusive_ports(primary):
    """
    Node: test-net-listen-shared-ports.  Each worker listens on a shared
    port and then, exclusively, on a fixed port: worker 1 gets it, worker 2
    gets EADDRINUSE; the shared port is the same for both.
    """
    primary.setupPrimary(args=["sharedAndExclusive"])
    env = {"EXCLUSIVE_PORT": freePort()}
    first = primary.fork(env)
    firstReport = yield primary.recorder.message(first, "exclusive")
    assert firstReport == {"event": "exclusive", "port": env["EXCLUSIVE_PORT"], "error": None}
    second = primary.fork(env)
    secondReport = yield primary.recorder.message(second, "exclusive")
    assert secondReport["error"] == "EADDRINUSE"
    shared = yield gatherResults([primary.recorder.message(w, "listening") for w in (first, second)])
    assert shared[0]["port"] == shared[1]["port"]


@pytest_twisted.inlineCallbacks
def test_server_drop_connection(primary, tmp_path):
    """
    Node: test-cluster-net-server-drop-connection.  Round-robin over a UNIX
    socket; three workers take at most 0, 1 and 9 connections (a factory's
    buildProtocol returning None refuses one); ten clients: each is served,
    the refused ones by another worker, and the workers served exactly 0, 1
    and 9.
    """
    from twisted.internet import reactor
    from twisted.internet.endpoints import UNIXClientEndpoint, connectProtocol

    from tests.test_node_lifecycle import Client

    path = str(tmp_path / "rr.sock")
    workers = []
    for limit in (0, 1, 9):
        primary.setupPrimary(args=["maxConnections", path, str(limit)])
        workers.append(primary.fork())
    yield gatherResults([primary.recorder.message(w, "listening") for w in workers])
    yield gatherResults([w.whenListening() for w in workers])
    clients = []
    for n in range(10):
        client = yield connectProtocol(UNIXClientEndpoint(reactor, path), Client())
        client.transport.write(b"client %d\n" % n)
        yield client.expect(b"client %d\n" % n)
        clients.append(client)
    for worker in workers:
        worker.send("count")
    served = yield gatherResults([primary.recorder.message(w, "served") for w in workers])
    assert [s["served"] for s in served] == [0, 1, 9]
    for client in clients:
        client.transport.loseConnection()


@pytest_twisted.inlineCallbacks
def test_listen_backlog(primary):
    """
    Node: test-cluster-net-listen-backlog.  The worker listens with backlog
    127 (an ordinary reactor.listenTCP): the primary's socket was made with
    it.
    """
    primary.setupPrimary(args=["backlog"])
    worker = primary.fork()
    yield worker.whenListening().addTimeout(TIMEOUT, primary._reactor)
    (handle,) = list(primary._handles)
    assert handle.spec.backlog == 127


@pytest_twisted.inlineCallbacks
def test_listen_relative_path(primary, tmp_path, monkeypatch):
    """
    Node: test-cluster-net-listen-relative-path.  A UNIX socket whose
    absolute path is longer than a socket address holds: the primary binds
    it relative to its directory, clients connect, and the socket file is
    removed once the cluster is done.
    """
    from twisted.internet import reactor
    from twisted.internet.endpoints import UNIXClientEndpoint, connectProtocol

    from tests.test_node_lifecycle import Client

    directory = tmp_path / ("d" * 100)
    directory.mkdir()
    assert len(str(directory / "sock")) > 107
    monkeypatch.chdir(directory)
    primary.setupPrimary(args=["listen", "unix:sock"], cwd=str(directory))
    worker = primary.fork()
    yield worker.whenListening().addTimeout(TIMEOUT, reactor)
    client = yield connectProtocol(UNIXClientEndpoint(reactor, "sock"), Client())
    client.transport.write(b"hello")
    yield client.expect(b"hello")
    client.transport.loseConnection()
    yield primary.disconnect().addTimeout(TIMEOUT, reactor)
    assert not (directory / "sock").exists()


@pytest_twisted.inlineCallbacks
def test_ordinary_twisted_listens_go_through_the_primary(primary):
    """
    Node: how net.Server.listen works in a worker (doc "How it works",
    test-cluster-child-index-net).  reactor.listenTCP and serverFromString in
    a worker listen through the primary: three port-0 listens in one worker
    give three ports, and the n-th listen of every worker shares one.
    """
    primary.setupPrimary(args=["twistedListens"])
    workers = [primary.fork(), primary.fork()]
    reports = yield gatherResults([primary.recorder.message(w, "ports") for w in workers])
    first, second = (sorted(r["ports"]) for r in reports)
    assert len(set(first)) == 3
    assert first == second
    listened = yield primary.recorder.wait("listening", count=6)
    assert listened


@pytest_twisted.inlineCallbacks
def test_dgram(primary):
    """
    Node: test-cluster-dgram-1.  Two workers bind one UDP port through the
    primary (UDP is always a shared handle, as in Node); every datagram sent
    to it reaches exactly one of them.
    """
    primary.setupPrimary(args=["udp"])
    workers = [primary.fork(), primary.fork()]
    reports = yield gatherResults([primary.recorder.message(w, "listening") for w in workers])
    port = reports[0]["port"]
    assert reports[1]["port"] == port
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        for n in range(20):
            sender.sendto(b"datagram %d" % n, ("127.0.0.1", port))
    received = yield primary.recorder.wait("message", lambda w, m: m.get("event") == "datagram", 20)
    assert received
    messages = [args[1] for name, args in primary.recorder.events if name == "message"]
    data = sorted(m["data"] for m in messages if m.get("event") == "datagram")
    assert data == sorted(f"datagram {n}" for n in range(20))
