"""
Every scheduling policy, on TCP and on a UNIX socket at once, with real
masters, workers and clients; and the case that justifies least-conn.
"""

from __future__ import annotations

import collections
import signal
import socket

import pytest
from twisted.trial.unittest import SynchronousTestCase

from tests._cluster import (
    connect,
    listeningSockets,
    readLine,
    socketsHeldBy,
    stopped,
    whoServes,
)
from twistcluster._common.policies import SchedulingPolicy, schedulingPolicy

APP = "tests.clusterapps.WhoAmIFactory"
POLICY_ENVIRONMENT = "TWISTCLUSTER_SCHED_POLICY"


class ChoosingAPolicyTests(SynchronousTestCase):
    def test_default(self) -> None:
        self.assertIs(schedulingPolicy(None, {}), SchedulingPolicy.RR)
        self.assertIs(schedulingPolicy(None, {POLICY_ENVIRONMENT: ""}), SchedulingPolicy.RR)

    def test_environment(self) -> None:
        self.assertIs(schedulingPolicy(None, {POLICY_ENVIRONMENT: "least-conn"}), SchedulingPolicy.LEAST_CONN)

    def test_optionWins(self) -> None:
        self.assertIs(schedulingPolicy("reuseport", {POLICY_ENVIRONMENT: "none"}), SchedulingPolicy.REUSEPORT)

    def test_unknownNamesItsSource(self) -> None:
        error = self.assertRaises(ValueError, schedulingPolicy, None, {POLICY_ENVIRONMENT: "random"})
        self.assertEqual(
            str(error),
            f"${POLICY_ENVIRONMENT} 'random' is not a scheduling policy "
            "(choose from rr, least-conn, none, reuseport)",
        )
        error = self.assertRaises(ValueError, schedulingPolicy, "RR", {})
        self.assertTrue(str(error).startswith("--scheduling 'RR' is not"))


@pytest.mark.parametrize(
    "policy, options, env",
    [
        # The option wins over the environment.
        ("rr", ["--scheduling", "rr"], {POLICY_ENVIRONMENT: "none"}),
        ("least-conn", ["--scheduling", "least-conn"], {}),
        # The environment alone chooses.
        ("none", [], {POLICY_ENVIRONMENT: "none"}),
        ("reuseport", ["--scheduling", "reuseport"], {}),
    ],
)
def test_policy_serves_tcp_and_unix(cluster, tmp_path, policy, options, env):
    """
    Each policy serves a TCP port and a UNIX socket (mode honoured, a stale
    socket file replaced) with every worker, holding the listening sockets
    where the policy says; a graceful stop removes the socket file and leaves
    nothing running.
    """
    path = str(tmp_path / "app.sock")
    with socket.socket(socket.AF_UNIX) as dead:
        dead.bind(path)
    c = cluster(
        "--workers",
        "2",
        *options,
        "--listen",
        "tcp:0:interface=127.0.0.1",
        "--listen",
        f"unix:{path}:mode=600",
        APP,
        env=env,
    )
    pids = c.waitReady(2)
    assert c.matches(rf"removed the stale socket file {path}$")
    address = c.address("tcp:0:interface=127.0.0.1")
    unixScheduling = "none" if policy == "reuseport" else policy
    assert [scheduling for _, _, scheduling in c.bound()] == [policy, unixScheduling]
    assert (tmp_path / "app.sock").stat().st_mode & 0o777 == 0o600

    _assertServedAsThePolicySays(policy, c.process.pid, pids, address, path)

    c.signal(signal.SIGTERM)
    assert c.wait() == 0
    assert not (tmp_path / "app.sock").exists()
    assert c.leftovers() == []


def _assertServedAsThePolicySays(policy: str, master: int, pids: dict[int, int], address, path: str) -> None:
    """
    Who holds the listening sockets (by their inodes), and who accepts.
    """
    tcpSockets, unixSockets = listeningSockets(port=address[1]), listeningSockets(path=path)
    held = {pid: socketsHeldBy(pid) for pid in [master, *pids.values()]}
    workers = list(pids.values())
    if policy in ("rr", "least-conn"):
        # The master accepts; workers get connections, never the socket.
        assert held[master] & tcpSockets and held[master] & unixSockets
        assert all(not held[w] & (tcpSockets | unixSockets) for w in workers)
        for endpoint in (address, path):
            served = [whoServes(endpoint)[0] for _ in range(4)]
            assert served[0] != served[1] and served == served[:2] * 2, served
        return
    # Workers accept for themselves: on the master's one socket...
    if policy == "none":
        assert all(held[w] & tcpSockets == held[master] & tcpSockets != set() for w in workers)
    else:
        # ...or each on its own (reuseport TCP), which the master keeps too
        # (the worker that replaces one takes over its socket, and its
        # queue); the kernel spreads connections by hash.
        own = [held[w] & tcpSockets for w in workers]
        assert all(own) and not own[0] & own[1] and held[master] & tcpSockets == own[0] | own[1]
        served = collections.Counter(whoServes(address)[1] for _ in range(32))
        assert set(served) == set(workers), served
    # UNIX sockets have no SO_REUSEPORT group: shared under reuseport too.
    assert all(held[w] & unixSockets == held[master] & unixSockets != set() for w in workers)
    _eachWorkerAcceptsAlone(pids, [path] if policy == "reuseport" else [address, path])


def _eachWorkerAcceptsAlone(pids: dict[int, int], endpoints: list) -> None:
    """
    With all but one worker stopped, that one still serves every shared
    endpoint: each worker accepts on the socket itself.
    """
    for worker, pid in pids.items():
        others = [p for p in pids.values() if p != pid]
        with stopped(others[0]):
            for endpoint in endpoints:
                assert whoServes(endpoint) == (worker, pid)


@pytest.mark.parametrize(
    "policy, expected",
    [
        # rr keeps alternating: the worker whose connections ended stays light.
        ("rr", {"first": 2, "second": 4}),
        # least-conn fills the emptier worker first: even again.
        ("least-conn", {"first": 3, "second": 3}),
    ],
)
def test_long_lived_connections_stay_even_under_least_conn(cluster, policy, expected):
    """
    Four long-lived connections spread two and two; the two on one worker
    end; four more arrive.  Under rr the live connections end up 2 against
    4, under least-conn 3 against 3.
    """
    c = cluster(
        "--workers",
        "2",
        "--scheduling",
        policy,
        "--listen",
        "tcp:0:interface=127.0.0.1",
        APP,
        twistArgs=["--log-level", "debug"],
    )
    c.waitReady(2)
    address = c.address()
    live = [_openGreeted(address) for _ in range(4)]
    first, second = live[0][1], live[1][1]
    assert [w for _, w in live] == [first, second, first, second]

    for sock, _ in [entry for entry in live if entry[1] == first]:
        sock.close()
    live = [entry for entry in live if entry[1] != first]
    if policy == "least-conn":
        # The worker reports the ends (batched); wait until the master knows.
        c.waitFor(rf"worker {first} closed \d+ connections on \S+; 0 live")

    live += [_openGreeted(address) for _ in range(4)]
    counts = collections.Counter(worker for _, worker in live)
    assert counts == {first: expected["first"], second: expected["second"]}
    for sock, _ in live:
        sock.sendall(b"still here\n")
        assert readLine(sock) == "still here\n"
        sock.close()


def _openGreeted(address):
    sock = connect(address)
    greeting = readLine(sock)
    assert greeting.startswith("worker="), greeting
    return sock, int(greeting.split()[0].split("=")[1])
